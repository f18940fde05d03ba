"""Resident memory of the running process, from /proc (Linux): for the memory benchmarks.

A benchmark that compares the memory of configurations runs each in a fresh process, reads
`rss_kib("VmRSS")` before the part it measures, calls `reset_peak()`, and reads
`rss_kib("VmHWM")` (the peak since the reset) after it.
"""


def rss_kib(field):
    """A field of /proc/self/status in KiB: "VmRSS" (resident now) or "VmHWM" (the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak():
    """Resets the peak resident set size (VmHWM) to the current one."""
    # Writing 5 to clear_refs does that (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
