"""Binary cross-entropy on scikit-learn's bundled breast-cancer data: standardised features,
a stratified train/test split, the loss falling and the held-out accuracy (about 0.97).

Usage: python examples/binary_classification.py [options]   (--help lists them)
Same as: python -m chainrule demo binary_classification [options]
The logic lives in chainrule.demos.binary_classification; this script is its command line.
"""
import sys

from _common import run

if __name__ == "__main__":
    sys.exit(run("binary_classification"))
