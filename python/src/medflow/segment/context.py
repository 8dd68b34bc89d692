"""Temporal context: other frames of a cine as extra input channels.

Some structures are told apart by *when* they are seen, not by how they look: at end
systole the valve plane has moved towards the apex, so the most basal short-axis slice cuts
the atrium, whose bright blood and thin wall look locally like the LV it showed at end
diastole. Frame by frame a network must guess; given the end-diastolic frame beside the
current one, it sees that the thick myocardial ring of ED is gone. The same holds for any
label whose identity depends on the cardiac phase or on where a slice sits along the long
axis (outflow tracts, the RV base).

A context spec names, per extra frame, which frame of the cine it is:

- ``"ed"``: frame 0 (UK Biobank cines are triggered at the R wave: frame 0 is ED);
- ``"-1"``, ``"+1"``, ...: the frame that many steps away, cyclically (a cine is periodic).

The network sees ``in_channels x (1 + len(spec))`` channels: the image roles at frame t,
then the roles at each context frame, in spec order. The spec is part of the model's config
(``context_frames`` in ``model.json``), so prediction builds the same channels; a model with
context needs the whole cine (a 3D frame is refused).
"""

from __future__ import annotations

from medflow.errors import InvalidDataError

ED = "ed"


def parse_context(text: str | None) -> tuple[str, ...]:
    """``"ed,-1"`` -> ``("ed", "-1")``; ``"none"``, ``""`` or None -> ``()``.

    Raises:
        ValueError: an entry that is neither ``ed`` nor a non-zero integer offset, or a
            repeated entry.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    out = []
    for item in (t.strip().lower() for t in text.split(",")):
        if item != ED:
            try:
                offset = int(item)
            except ValueError:
                raise ValueError(f"context frame {item!r}: use 'ed' or a frame offset such "
                                 "as -1 or +1") from None
            if offset == 0:
                raise ValueError("context frame offset 0 is the frame itself")
            item = f"{offset:+d}"
        if item in out:
            raise ValueError(f"context frame {item!r} given twice")
        out.append(item)
    return tuple(out)


def context_index(spec: str, t: int, n_frames: int) -> int:
    """The frame that ``spec`` names for frame ``t`` of an ``n_frames`` cine.

    Example:
        >>> [context_index(s, 0, 10) for s in ("ed", "-1", "+1")]
        [0, 9, 1]
    """
    return 0 if spec == ED else (t + int(spec)) % n_frames


def frame_sources(context: tuple[str, ...], t: int, n_frames: int) -> list[int]:
    """Frames feeding the network for frame ``t``: ``t`` first, then the context frames."""
    return [t] + [context_index(s, t, n_frames) for s in context]


def check_cine(context: tuple[str, ...], n_frames: int, path=None) -> None:
    """A model with temporal context needs a cine: InvalidDataError (exit 65) otherwise."""
    if context and n_frames < 2:
        raise InvalidDataError(
            f"the model reads each frame with context frames {','.join(context)} of its cine "
            "(context_frames in model.json): give the whole 3D+time cine, not one 3D frame",
            path)
