# thermopipe reference firmware, protocol version 1 (schemas/SERIAL_PROTOCOL.md).
# MicroPython on a Raspberry Pi Pico (RP2040) or an ESP32 with DS18B20 sensors on one 1-Wire pin
# (4.7 kOhm pull-up to 3.3 V). Copy as main.py: mpremote cp main.py :main.py
# Speaks over the USB serial console (sys.stdout / sys.stdin).
import sys
import time

import machine
import onewire
import ds18x20

try:
    import select
except ImportError:  # very old ports
    select = None

FW_VERSION = "1.0.0"
ONEWIRE_PIN = 22          # GP22 on a Pico; any free GPIO on an ESP32
DEFAULT_INTERVAL_MS = 5000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 86400000
MAX_SENSORS = 10
CONVERSION_MS = 750       # 12-bit conversion time of a DS18B20


def crc8(data):
    # CRC-8/MAXIM, the same CRC the DS18B20 puts in its scratchpad
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def frame(body):
    raw = body.encode()
    return "$%s*%02X\n" % (body, crc8(raw))


def send(body):
    sys.stdout.write(frame(body))


def device_id():
    return "mpy-" + "".join("%02x" % b for b in machine.unique_id())


def rom_id(rom):
    # Linux sysfs form: family code, "-", the 48-bit serial most significant byte first
    return "%02x-%s" % (rom[0], "".join("%02x" % b for b in reversed(rom[1:7])))


def fmt_milli(milli):
    sign = "-" if milli < 0 else ""
    milli = abs(milli)
    return "%s%d.%03d" % (sign, milli // 1000, milli % 1000)


class Firmware:
    def __init__(self):
        self.bus = ds18x20.DS18X20(onewire.OneWire(machine.Pin(ONEWIRE_PIN)))
        self.roms = self.bus.scan()[:MAX_SENSORS]
        self.interval_ms = DEFAULT_INTERVAL_MS
        self.seq = 0
        self.boot = time.ticks_ms()
        self.line = b""
        self.poll = None
        if select is not None:
            self.poll = select.poll()
            self.poll.register(sys.stdin, select.POLLIN)

    def uptime_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.boot) & 0xFFFFFFFF

    def hello(self):
        sensors = ";".join(rom_id(r) + ":C" for r in self.roms)
        send("HELLO,1,%s,%s,%d,%s" % (FW_VERSION, device_id(), self.interval_ms, sensors))

    def data(self, body):
        send("%s,%d,%d" % (body, self.seq, self.uptime_ms()))
        self.seq = (self.seq + 1) & 0xFFFFFFFF

    def sample(self):
        present = self.bus.scan()
        try:
            self.bus.convert_temp()
        except onewire.OneWireError:
            pass
        self.wait_commands(CONVERSION_MS)
        for rom in self.roms:
            sid = rom_id(rom)
            if rom not in present:
                self.data("E,%s,MISSING" % sid)
                continue
            try:
                pad = self.bus.read_scratch(rom)
            except onewire.OneWireError:
                self.data("E,%s,READ_FAILED" % sid)
                continue
            if crc8(pad[:8]) != pad[8]:
                self.data("E,%s,CRC" % sid)
                continue
            raw = pad[0] | (pad[1] << 8)
            if raw & 0x8000:
                raw -= 0x10000
            # Same truncation as Linux w1_therm, so serial and w1 agree to the milli-degree.
            milli = int(raw * 1000 / 16)
            self.data("R,%s,%s" % (sid, fmt_milli(milli)))

    def command(self, line):
        line = line.strip()
        star = line.rfind(b"*")
        if not line.startswith(b"$") or star < 0 or len(line) - star != 3:
            send("NAK,?,BAD_FRAME")
            return
        body = line[1:star]
        try:
            ok = int(line[star + 1:], 16) == crc8(body)
        except ValueError:
            ok = False
        if not ok:
            send("NAK,?,BAD_FRAME")
            return
        fields = body.decode().split(",")
        if fields == ["ID"]:
            self.hello()
        elif fields[0] == "INT" and len(fields) == 2 and fields[1].isdigit():
            value = int(fields[1])
            if MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
                self.interval_ms = value
                send("ACK,INT,%d" % value)
            else:
                send("NAK,INT,RANGE")
        elif fields[0] == "INT":
            send("NAK,?,BAD_FRAME")
        else:
            send("NAK,%s,UNKNOWN" % fields[0][:32])

    def wait_commands(self, ms):
        # Read host commands until ``ms`` have passed; lines start at '$' (resync on garbage).
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return
            if self.poll is None:
                time.sleep_ms(min(left, 50))
                continue
            if not self.poll.poll(left):
                continue
            ch = sys.stdin.buffer.read(1) if hasattr(sys.stdin, "buffer") else sys.stdin.read(1)
            if isinstance(ch, str):
                ch = ch.encode()
            if ch == b"$":
                self.line = b"$"
            elif ch == b"\n":
                if self.line:
                    self.command(self.line)
                self.line = b""
            elif self.line and len(self.line) < 256:
                self.line += ch
            else:
                self.line = b""

    def run(self):
        self.hello()
        while True:
            started = time.ticks_ms()
            self.sample()
            spent = time.ticks_diff(time.ticks_ms(), started)
            self.wait_commands(max(0, self.interval_ms - spent))


Firmware().run()
