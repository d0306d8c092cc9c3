# Drives the ipsec-secgw oracle from the test: reads one JSON request on stdin, sends the
# given IPv4 packet (hex) as an Ethernet frame on one tap interface and prints, as hex, the
# first IPv4 packet that matches the BPF filter on another, or "none" after the timeout.
import json
import sys
import time

from scapy.all import AsyncSniffer, Ether, IP, conf, sendp

conf.verb = 0
req = json.load(sys.stdin)
sn = AsyncSniffer(iface=req["sniff"], filter=req["filter"], count=1, timeout=req.get("timeout", 3))
sn.start()
time.sleep(0.5)
sendp(Ether(dst="ff:ff:ff:ff:ff:ff") / IP(bytes.fromhex(req["packet"])), iface=req["send"])
sn.join()
print(bytes(sn.results[0][IP]).hex() if sn.results else "none")
