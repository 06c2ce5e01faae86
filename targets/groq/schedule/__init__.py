"""Static scheduling: MEM placement, stream ids and issue cycles for a lowered graph.

By concern:
- `reservations.py`: the reservation tables of one chip (queues, MEM banks, streams);
- `placement.py`: which MEM slices and addresses every buffer takes;
- `scheduler.py`: list scheduling of one chip's nodes in op order (macros and the int8
  matmul's reads, unpacks, installs, passes and rescales), the `Program` it fills;
- `multichip.py`: nodes over several chips, cross-chip copies and C2C transfers.

`schedule` is the entry point; the column-split re-planning loop around it (an SRAM
overflow plans more chips) is `plan_and_schedule` in targets/groq/compile.py (docs/groq.md).
"""

from __future__ import annotations

from q35c.targets.groq.lower import Graph
from q35c.targets.groq.machine import Machine
from q35c.targets.groq.schedule.multichip import schedule_chips
from q35c.targets.groq.schedule.reservations import macro_mem_spans
from q35c.targets.groq.schedule.scheduler import Program, Scheduler


def schedule(graph: Graph, m: Machine, chips: int = 1,
             assign: dict[int, int] | None = None) -> Program:
    """Schedule `graph` on `chips` chips (`assign`: IR op index -> chip, see
    `schedule_chips`)."""
    if chips <= 1:
        return Scheduler(graph, m).run()
    return schedule_chips(graph, m, chips, assign)


__all__ = ["Program", "Scheduler", "macro_mem_spans", "schedule", "schedule_chips"]
