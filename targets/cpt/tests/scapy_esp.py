# The scapy side of the ESP oracle: reads one JSON request on stdin (so that keys never
# appear on a command line) and decrypts or encrypts with scapy's SecurityAssociation.
import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

req = json.load(sys.stdin)
sa = SecurityAssociation(
    ESP,
    spi=req["spi"],
    seq_num=req.get("seq", 1),
    crypt_algo="AES-GCM",
    crypt_key=bytes.fromhex(req["key"]),
    tunnel_header=IP(src=req["src"], dst=req["dst"]),
    esn_en=req["esn"],
    esn=0,
)
if req["op"] == "decrypt":
    try:
        inner = sa.decrypt(IP(bytes.fromhex(req["packet"])))
    except Exception as e:  # scapy raises on a bad ICV
        print("error " + type(e).__name__)
        sys.exit(3)
    print("ok " + bytes(inner[UDP].payload).hex())
else:
    inner = IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=4000, dport=5000) / Raw(bytes.fromhex(req["data"]))
    print("ok " + bytes(sa.encrypt(inner)).hex())
