"""What the virtual DUT prints, written out independently of its firmware, for byte-exact checks."""


def golden_log(n: int) -> bytes:
    """What `log n` prints: numbered heartbeat lines, exactly n bytes, the last one cut short
    but still ending with a line break (CR LF, or a lone LF when only one byte is left)."""
    out, i = bytearray(), 0
    while len(out) < n:
        i += 1
        out += f"log {i:08d} sensor-node heartbeat lorem ipsum dolor sit amet\r\n".encode()
    if len(out) == n:
        return bytes(out)
    cut = out[:n]
    start = cut.rfind(b"\n") + 1                 # the last, unfinished line
    end = b"\r\n" if n - start >= 2 else b"\n"
    return bytes(cut[:n - len(end)] + end)
