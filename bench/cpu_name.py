"""The CPU's model name from /proc/cpuinfo, shared by the benchmark scripts' machine lines."""


def cpu_name() -> str:
    """The first `model name` in /proc/cpuinfo, or "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
