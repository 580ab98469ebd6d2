"""Size arithmetic for the launches, on the host, in plain Python.

triton.cdiv and triton.next_power_of_2 are constexpr functions in Triton 3.9: called from
Python each goes through Triton's JIT machinery, about 2.5 us (measured here), and a launch
makes several (a matmul's candidate configs asked next_power_of_2 twelve times). These give
the same integers for every size a launch passes (tests/test_templates.py checks them
against Triton's).
"""


def cdiv(a: int, b: int) -> int:
    """a / b rounded up."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n = 1, 0 for n = 0, as Triton's)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()
