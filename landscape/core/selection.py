"""Parameter selection (`--params GLOB[,GLOB]`, `--exclude GLOB[,...]`): the tensors of θ that
directions, normalization, the θ writer and Hessians act on.

A tensor is selected when one of its names (a tied tensor has several: an LM head sharing the
input embedding) matches a `params` glob and none matches an `exclude` glob; no `params`
selects every tensor. A glob matches a name as `fnmatch` does (`*`, `?`, `[...]`, case
sensitive) or as a module prefix: `model.layers.0` matches `model.layers.0.mlp.up_proj.weight`.
Unselected tensors are never written: they stay bit-identical at every point.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..errors import UserError


def globs(value) -> tuple[str, ...]:
    """A comma-separated string or a list of globs, as a tuple (empty for None)."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(g).strip() for g in items if str(g).strip())


def matches(pattern: str, name: str) -> bool:
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


@dataclass(frozen=True)
class Selection:
    """`params`: globs of the tensors to keep (empty: all); `exclude`: globs of tensors to leave out."""

    params: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, params=None, exclude=None) -> Selection:
        return cls(globs(params), globs(exclude))

    @property
    def everything(self) -> bool:
        return not self.params and not self.exclude

    def keep(self, aliases: list[str]) -> bool:
        chosen = not self.params or any(matches(g, a) for g in self.params for a in aliases)
        return chosen and not any(matches(g, a) for g in self.exclude for a in aliases)

    def names(self, groups: dict[str, list[str]]) -> list[str]:
        """The selected tensors' first names, from {first name: all its names}; a glob that
        matches no tensor, or a selection of nothing, is a UserError naming a few real names."""
        every = [a for aliases in groups.values() for a in aliases]

        def few() -> str:
            return ", ".join(every[:4]) + (f", ... ({len(every)} in all)" if len(every) > 4 else "")

        for flag, patterns in (("--params", self.params), ("--exclude", self.exclude)):
            for g in patterns:
                if not any(matches(g, a) for a in every):
                    raise UserError(f"{flag} {g!r} matches no tensor of the model (names are like {few()}): "
                                    "fix the glob, e.g. 'model.layers.0.*'")
        kept = [first for first, aliases in groups.items() if self.keep(aliases)]
        if not kept:
            raise UserError(f"--params {','.join(self.params)!r} with --exclude {','.join(self.exclude)!r} selects no "
                            f"tensor (names are like {few()}): exclude less")
        return kept

    def record(self) -> dict | None:
        """What the surface file stores (None: every tensor)."""
        return None if self.everything else {"params": list(self.params), "exclude": list(self.exclude)}
