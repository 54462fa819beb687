"""Agent resources (cpus, mem, ports) as values, and their Mesos v1 JSON shape.

Scalars keep three decimals, as Mesos does, so repeated subtraction of 0.1 cpus does not
leave a sliver of 1e-17 that would be offered forever.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int]


def _fixed(value: float) -> float:
    return round(value, 3)


def _normalize(ranges: list[Range]) -> tuple[Range, ...]:
    merged: list[list[int]] = []
    for begin, end in sorted(r for r in ranges if r[0] <= r[1]):
        if merged and begin <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return tuple((b, e) for b, e in merged)


def _subtract_ranges(have: tuple[Range, ...], take: tuple[Range, ...]) -> tuple[Range, ...]:
    out = list(have)
    for tb, te in take:
        nxt: list[Range] = []
        for b, e in out:
            if te < b or tb > e:
                nxt.append((b, e))
                continue
            if b < tb:
                nxt.append((b, tb - 1))
            if te < e:
                nxt.append((te + 1, e))
        out = nxt
    return _normalize(out)


def _ranges_contain(have: tuple[Range, ...], want: tuple[Range, ...]) -> bool:
    return all(any(b <= wb and we <= e for b, e in have) for wb, we in want)


class InvalidResources(ValueError):
    """A resource list in a call that the simulator cannot read (names the bad entry)."""


@dataclass(frozen=True)
class Resources:
    """A bundle of cpus, mem (MB) and port ranges."""

    cpus: float = 0.0
    mem: float = 0.0
    ports: tuple[Range, ...] = ()

    def __add__(self, other: Resources) -> Resources:
        # Most tasks hold no ports: skip the merge of two empty lists (a hot path).
        if self.ports or other.ports:
            ports = _normalize(list(self.ports) + list(other.ports))
        else:
            ports = ()
        return Resources(_fixed(self.cpus + other.cpus), _fixed(self.mem + other.mem), ports)

    def __sub__(self, other: Resources) -> Resources:
        ports = _subtract_ranges(self.ports, other.ports) if self.ports or other.ports else ()
        return Resources(_fixed(self.cpus - other.cpus), _fixed(self.mem - other.mem), ports)

    def contains(self, other: Resources) -> bool:
        """True when `other` fits inside these resources."""
        return (
            other.cpus <= self.cpus + 1e-9
            and other.mem <= self.mem + 1e-9
            and _ranges_contain(self.ports, other.ports)
        )

    def is_empty(self) -> bool:
        """Nothing worth offering: Mesos's allocator also skips slivers below these minima."""
        return self.cpus < 0.01 and self.mem < 32

    def to_proto(self) -> list[dict]:
        """The v1 `resources` list, role "*"."""
        out: list[dict] = []
        if self.cpus > 0:
            out.append(_scalar("cpus", self.cpus))
        if self.mem > 0:
            out.append(_scalar("mem", self.mem))
        if self.ports:
            out.append(
                {
                    "name": "ports",
                    "type": "RANGES",
                    "ranges": {"range": [{"begin": b, "end": e} for b, e in self.ports]},
                    "role": "*",
                }
            )
        return out

    def to_json(self) -> dict:
        """A compact shape for the state endpoint."""
        return {"cpus": self.cpus, "mem": self.mem, "ports": [list(r) for r in self.ports]}

    @staticmethod
    def from_proto(resources: object) -> Resources:
        """Read a v1 `resources` list; unknown resource names are ignored."""
        if not isinstance(resources, list):
            raise InvalidResources(f"resources must be a list, got {resources!r}")
        # Summed entry by entry, each sum kept to three decimals (as `+` does).
        cpus = mem = 0.0
        ports: list[Range] = []
        for entry in resources:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InvalidResources(f"resource without a name: {entry!r}")
            name = entry["name"]
            if name in ("cpus", "mem"):
                value = (entry.get("scalar") or {}).get("value")
                if not isinstance(value, int | float) or value < 0:
                    raise InvalidResources(f"resource {name} needs a scalar value: {entry!r}")
                if name == "cpus":
                    cpus = _fixed(cpus + value)
                else:
                    mem = _fixed(mem + value)
            elif name == "ports":
                ranges = ((entry.get("ranges") or {}).get("range")) or []
                try:
                    ports += [(int(r["begin"]), int(r["end"])) for r in ranges]
                except (KeyError, TypeError, ValueError) as exc:
                    raise InvalidResources(f"bad port ranges: {entry!r}") from exc
        return Resources(cpus, mem, _normalize(ports))


def _scalar(name: str, value: float) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*"}
