"""The reference executor's Dense products on a CPU, called as the PyTorch loop a user writes calls
them: the bias added by the product itself, and narrow outputs in the layout MKL computes fast.

A Dense layer's bias_add(matmul(x, kernel), bias), x of rank 2 and float32 or float64 (16-bit
dtypes keep Keras's two roundings: reference_fusions._matmul_bias_pair), runs as
torch.addmm(bias, x, kernel), as nn.Linear runs: addmm starts its output from the bias and adds
the product into it, where a matmul and then an add write a fresh output and pass over it again.
Measured on this project's 2-core CPU at two threads, alternated: the 784-512-512-10 MLP's forward
at batch 128 took 1018-1144 us that way (nn.functional.linear) against 1064-1314 us as matmul and
add (three runs; the eager loop 988-1094 us); one product of the seed MLP, 32x64 @ 64x10, 8.2 us
against 10.2 us (linear: 9.4 us, which is why the schedule calls addmm itself).

narrow_matmul: torch hands a row-major x @ W to MKL's sgemm as the column-major product W^T x^T,
whose output has as many rows as W has columns. With 2 to 10 of them that kernel is slow, and the
Dense layer that ends most classifiers is such a product: its forward x @ W, (batch, in) @ (in,
classes), and its weight gradient x^T @ dY, (in, batch) @ (batch, classes). The PyTorch loop does
not meet it: nn.Linear keeps its weight as (out, in), and autograd forms the weight gradient as
dY^T @ x. Measured here (torch 2.13.0+cpu, batch 128, float32, median of alternated rounds, one
thread / two):

    forward 128x512 @ 512x10          x @ W  90 / 48 us    x @ (W in nn.Linear's layout)  45 / 26 us
    weight gradient 512x128 @ 128x10  x^T @ dY  120 / 100 us    (dY^T @ x)^T  39 / 38 us

So a narrow forward copies W to column-major (a few thousand numbers, as nn.Linear's weight lies in
memory) and a narrow weight gradient is (dY^T @ x)^T, copied back to row-major. Below the sizes in
NARROW_FROM (a's elements, and the forward's rows) the plain product was as fast or faster, and with
one output column it is a matrix-vector product, fast as it is (the tables: bench/RESULTS.md,
fourteenth session).

All of these are the same sums in another order: they differ from matmul-then-add by float32
rounding (4.6e-5 at most on outputs of magnitude about 20 in the measurement above), as the PyTorch
loop's own results do.
"""

import torch

NARROW_COLUMNS = range(2, 11)  # output columns where the plain product is slow (12 and up: not)
NARROW_FROM = {"elements": 16384, "rows": 128}


def is_narrow(a_spec, b_spec) -> bool:
    """Whether a matmul of these IR operands may take narrow_matmul: rank-2 float32 operands whose
    product has a static number of columns in NARROW_COLUMNS (the rest is decided per run, by size)."""
    return (a_spec.rank == 2 and b_spec.rank == 2 and a_spec.dtype == b_spec.dtype == "float32"
            and isinstance(b_spec.shape[1], int) and b_spec.shape[1] in NARROW_COLUMNS)


# The checks below run on every call of a narrow product (is_narrow settled dtype, ranks and columns
# once): a few attribute reads, against a product of at least a few microseconds.
def _big_forward(a: torch.Tensor) -> bool:
    return (a.shape[0] >= NARROW_FROM["rows"] and a.numel() >= NARROW_FROM["elements"]
            and not a.is_cuda and a.is_contiguous())


def narrow_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b, a new row-major tensor, for a product is_narrow accepted."""
    if _big_forward(a):
        return torch.matmul(a, b.t().contiguous().t())  # b laid out as nn.Linear keeps its weight
    if a.numel() >= NARROW_FROM["elements"] and not a.is_cuda and a.t().is_contiguous():
        return torch.matmul(b.t(), a.t()).t().contiguous()  # a weight gradient, as autograd forms it
    return torch.matmul(a, b)


def narrow_dense(a: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """bias + a @ kernel for a Dense product is_narrow accepted (the others: torch.addmm as it is)."""
    if _big_forward(a):
        kernel = kernel.t().contiguous().t()  # laid out as nn.Linear keeps its weight
    return torch.addmm(bias, a, kernel)
