"""Composition of operators, (A2 ∘ A1)(x) = A2(A1(x))."""
from __future__ import annotations

from .base import LinearOperator, Operator

__all__ = ["Composed"]


class Composed(Operator):
    """A2 ∘ A1. If both are linear the result is a ``LinearOperator`` with (A2 A1)ᵀ = A1ᵀ A2ᵀ and A⁺ by
    conjugate gradients ((A2 A1)⁺ ≠ A1⁺ A2⁺ in general). The measurement noise is A2's unless given.
    """

    def __new__(cls, A2, A1, noise=None):
        if cls is Composed and isinstance(A1, LinearOperator) and isinstance(A2, LinearOperator):
            cls = ComposedLinear
        return super().__new__(cls)

    def __init__(self, A2: Operator, A1: Operator, noise=None):
        if tuple(A1.output_shape) != tuple(A2.input_shape):
            raise ValueError(f"Composed: expected A1's output shape to equal A2's input shape, got "
                             f"{tuple(A1.output_shape)} and {tuple(A2.input_shape)}")
        super().__init__(A1.input_shape, A2.output_shape, A2.noise if noise is None else noise)
        self.A1 = A1
        self.A2 = A2

    def _A(self, x):
        return self.A2._A(self.A1._A(x))


class ComposedLinear(Composed, LinearOperator):
    """Composition of two linear operators (see ``Composed``)."""

    def _A_T(self, y):
        return self.A1._A_T(self.A2._A_T(y))
