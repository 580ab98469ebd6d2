"""The optimizer algorithms, one record each (record.py says what a record holds).

Listed here explicitly, like the op registry: this file is the index of every
algorithm kcomp knows. Adding one is a record file and a line here (and its Keras
class in kcomp.optimizers).
"""

from kcomp.errors import ArgumentError
from kcomp.ir.optim import adadelta, adagrad, adam, adamax, ftrl, lion, nadam, rmsprop, sgd
from kcomp.ir.optim.record import Algorithm

# The multi-tensor kernel passes an algorithm's scalars in this many generic arguments.
MAX_KERNEL_SCALARS = 8

RECORDS: tuple[Algorithm, ...] = (
    sgd.RECORD, adam.RECORD, adam.ADAMW, rmsprop.RECORD, adagrad.RECORD,
    adadelta.RECORD, adamax.RECORD, nadam.RECORD, ftrl.RECORD, lion.RECORD,
)


def _index() -> dict[str, Algorithm]:
    out = {}
    for record in RECORDS:
        if record.name in out:
            raise TypeError(f"optimizer algorithm {record.name!r} is defined twice")
        scalars, _ = record.triton_arguments(record.resolve({}))
        if len(scalars) > MAX_KERNEL_SCALARS:
            raise TypeError(f"optimizer record {record.name}: {len(scalars)} kernel scalars, at most {MAX_KERNEL_SCALARS}")
        out[record.name] = record
    return out


ALGORITHMS: dict[str, Algorithm] = _index()


def get(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ArgumentError(f"Received: algorithm={name!r}. Expected one of {sorted(ALGORITHMS)}.") from None
