"""Backpropagation's gradient of every weight and bias beside central finite differences, in
float64; exits with 1 if any relative error exceeds the tolerance (1e-6). NumPy only.

Usage: python examples/gradient_check.py [options]   (--help lists them)
Same as: python -m chainrule demo gradient_check [options]
The logic lives in chainrule.demos.gradient_check; this script is its command line.
"""
import sys

from _common import run

if __name__ == "__main__":
    sys.exit(run("gradient_check"))
