"""The draft server's rooms import one way: model <- kv <- device <- speculation <- the
step engine, loop and factory at the server's root (shared helpers at the root, such as
``segments`` and ``device_clock``, import no room above them)."""
from tests.unit.test_vllm_seam import PACKAGE, imported_modules

SERVER = PACKAGE / "server"
ROOMS = ["model", "kv", "device", "speculation"]  # each may import only those before it
ABOVE_ROOMS = ("engine", "loop", "factory", "__main__", "memory_report")


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["vllm_ssd", "server"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in ROOMS else "root:" + parts[2]


def test_rooms_import_only_rooms_below_them():
    offenders = []
    for index, room in enumerate(ROOMS):
        higher = set(ROOMS[index + 1:])
        for path in (SERVER / room).rglob("*.py"):
            for module in imported_modules(path):
                target = room_of(module)
                if target in higher or target in {f"root:{name}" for name in ABOVE_ROOMS}:
                    offenders.append((str(path.relative_to(SERVER)), module))
    assert not offenders


def test_root_helpers_import_no_room_above_the_request_table():
    """The request table, the draft passes and the statistics sit between ``device`` and
    ``speculation``: they never import speculation."""
    for name in ("state", "draft_passes", "stats", "segments", "device_clock"):
        modules = imported_modules(SERVER / f"{name}.py")
        assert not [m for m in modules if room_of(m) == "speculation"], name
