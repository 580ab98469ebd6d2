"""Weight initializers with Keras's names, arguments and formulas.

Fans follow Keras: for a kernel of shape (..., in, out) the receptive field is
the product of the leading dims, fan_in = in * receptive, fan_out = out * receptive.
"""

import math

import torch

from kcomp.session import generator
from kcomp.errors import ArgumentError


def compute_fans(shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    def __call__(self, shape, dtype=torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=torch.float32):
        return torch.full(tuple(shape), float(self.value), dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


class _Seeded(Initializer):
    def __init__(self, seed=None):
        self.seed = seed

    def _gen(self):
        return generator(self.seed)

    def get_config(self):
        return {"seed": self.seed}


class RandomUniform(_Seeded):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=torch.float32):
        u = torch.rand(tuple(shape), generator=self._gen(), dtype=torch.float64)
        return (self.minval + (self.maxval - self.minval) * u).to(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(_Seeded):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=torch.float32):
        n = torch.randn(tuple(shape), generator=self._gen(), dtype=torch.float64)
        return (self.mean + self.stddev * n).to(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_normal(shape, stddev, gen):
    """Normal(0, stddev) redrawn outside two standard deviations, as Keras truncates."""
    out = torch.randn(tuple(shape), generator=gen, dtype=torch.float64)
    bad = out.abs() > 2
    while bad.any():
        out[bad] = torch.randn(int(bad.sum()), generator=gen, dtype=torch.float64)
        bad = out.abs() > 2
    return out * stddev


class TruncatedNormal(_Seeded):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=torch.float32):
        return (self.mean + _truncated_normal(shape, self.stddev, self._gen())).to(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(_Seeded):
    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if scale <= 0:
            raise ArgumentError(f"Received: scale={scale}. Expected a positive number.")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ArgumentError(f"Received: mode={mode!r}. Expected 'fan_in', 'fan_out' or 'fan_avg'.")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ArgumentError(
                f"Received: distribution={distribution!r}. Expected 'truncated_normal', 'untruncated_normal' or 'uniform'."
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=torch.float32):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        scale = self.scale / max(1.0, fan)
        gen = self._gen()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale)
            out = (torch.rand(tuple(shape), generator=gen, dtype=torch.float64) * 2 - 1) * limit
        elif self.distribution == "truncated_normal":
            # 0.879... is the stddev of a unit normal truncated to [-2, 2] (Keras's constant).
            out = _truncated_normal(shape, math.sqrt(scale) / 0.87962566103423978, gen)
        else:
            out = torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * math.sqrt(scale)
        return out.to(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _variance_scaling_preset(class_name, scale, mode, distribution):
    class Preset(VarianceScaling):
        def __init__(self, seed=None):
            super().__init__(scale, mode, distribution, seed)

        def get_config(self):
            return {"seed": self.seed}

    Preset.__name__ = Preset.__qualname__ = class_name
    return Preset


GlorotUniform = _variance_scaling_preset("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling_preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling_preset("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling_preset("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling_preset("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling_preset("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(_Seeded):
    """A (scaled) orthogonal matrix over (prod(shape[:-1]), shape[-1]), as Keras draws it."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype=torch.float32):
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = torch.randn(max(rows, cols), min(rows, cols), generator=self._gen(), dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))  # makes the distribution uniform (Mezzadri 2007)
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(tuple(shape)).to(dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_ALL = [
    Constant, Zeros, Ones, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
    GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal,
]
_BY_CLASS = {cls.__name__: cls for cls in _ALL}
_BY_ALIAS = {
    "constant": Constant, "zeros": Zeros, "ones": Ones,
    # Keras's string 'uniform' / 'normal' mean RandomUniform(-0.05, 0.05) / RandomNormal(0, 0.05).
    "uniform": RandomUniform, "random_uniform": RandomUniform,
    "normal": RandomNormal, "random_normal": RandomNormal, "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling, "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal, "orthogonal": Orthogonal,
}


def get(identifier) -> Initializer:
    """An initializer from a name, a {'class_name', 'config'} dict, or an instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_ALIAS.get(identifier) or _BY_CLASS.get(identifier)
        if cls is None:
            from difflib import get_close_matches

            near = get_close_matches(identifier, [*_BY_ALIAS, *_BY_CLASS], n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ArgumentError(f"Received: initializer={identifier!r}, which kcomp does not know.{hint}")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _BY_CLASS.get(identifier["class_name"])
        if cls is None:
            raise ArgumentError(f"Received: initializer class_name={identifier['class_name']!r}. Known: {sorted(_BY_CLASS)}.")
        return cls.from_config(identifier.get("config", {}))
    raise ArgumentError(f"Received: initializer={identifier!r}. Expected a name such as 'glorot_uniform' or an Initializer.")


def serialize(init: Initializer) -> dict:
    return {"class_name": type(init).__name__, "config": init.get_config()}
