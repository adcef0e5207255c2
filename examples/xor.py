"""XOR with a 2-4-1 network (tanh hidden layer): the loss falling, the predictions and the
decision values. NumPy only.

Usage: python examples/xor.py [options]   (--help lists them)
Same as: python -m chainrule demo xor [options]
The logic lives in chainrule.demos.xor; this script is its command line.
"""
import sys

from _common import run

if __name__ == "__main__":
    sys.exit(run("xor"))
