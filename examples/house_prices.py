"""House-price regression (California-housing CSV format, scikit-learn's copy, or synthetic data):
imputation, one-hot category, standardisation; RMSE and R^2 beside a least-squares baseline.

Usage: python examples/house_prices.py [options]   (--help lists them)
Same as: python -m chainrule demo house_prices [options]
The logic lives in chainrule.demos.house_prices; this script is its command line.
"""
import sys

from _common import run

if __name__ == "__main__":
    sys.exit(run("house_prices"))
