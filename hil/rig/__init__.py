"""The rig layer: rig files, the kinds of resource they name, and how each opens a driver or
starts a simulator plus a driver. The only layer that knows both drivers and simulators."""
from hil.rig.loader import check_table, load_rig, open_resource, simulators_for
from hil.rig.schema import GuardTarget, Key, Resource, Rig, RigKind
from hil.rig.simulators import Simulators

__all__ = ["GuardTarget", "Key", "Resource", "Rig", "RigKind", "Simulators", "check_table",
           "load_rig", "open_resource", "simulators_for"]
