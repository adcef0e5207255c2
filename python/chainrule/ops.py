"""The C++ kernels as functions over NumPy arrays (filled in by the ops work)."""
