"""Kind "sttp": an STTP (IEEE 2664) subscriber; host "sim" (or "sim:NAME", one simulator per
name) starts the STTP publisher simulator streaming generated grid telemetry."""
from __future__ import annotations

from hil.instruments.sttp import DEFAULT_PORT, SttpSettings, SttpSubscriber
from hil.rig.kinds.common import DAY
from hil.rig.schema import PORT, Key, Resource, RigKind, is_sim
from hil.rig.simulators import Simulators


def open_sttp(resource: Resource, sims: Simulators) -> SttpSubscriber:
    host, port = resource["host"], resource["port"]
    if is_sim(host):
        from hil.sim.sttp_server import SttpServer
        bench = sims.bench

        def factory() -> SttpServer:
            return SttpServer(resource["points"], rate=resource["rate"] or 30.0,
                              nominal=resource["nominal"], realtime=resource["realtime"],
                              seed=bench.seed, faults=resource["faults"] or None,
                              tls_cert=str(resource.path("tls_cert")) if resource["tls_cert"]
                              else None)
        try:
            server = bench.start("sttp:" + (host[4:] or resource.name), factory)
        except Exception as exc:  # noqa: BLE001 - a bad fault spec or certificate in the rig
            raise resource.error(f"cannot start the STTP simulator: {exc}",
                                 key="faults") from None
        host, port = server.host, server.port
    ca = str(resource.path("tls_ca")) if resource["tls_ca"] else ""
    settings = SttpSettings(filter=resource["filter"], compression=resource["compression"],
                            include_time=resource["include_time"], timeout=resource["timeout"],
                            rate=resource["rate"], tls=resource["tls"], tls_ca=ca,
                            tls_verify=resource["tls_verify"], resync=resource["resync"],
                            source=resource.name)
    return SttpSubscriber(host, port, settings)


KIND = RigKind(
    keys={
        "host": Key(str, sims=("sim", "sim:*"),
                         help='STTP publisher host, or "sim" for the simulator'),
        "port": Key(int, DEFAULT_PORT, min=PORT[0], max=PORT[1],
                    help="publisher command channel port (not used for sim)"),
        "filter": Key(str, "", help="filter expression; empty: every active measurement"),
        "compression": Key(str, "compact", choices=("compact", "tssc"),
                           help="payload compression to ask for"),
        "include_time": Key(bool, True, help="ask for time stamps with every measurement"),
        "rate": Key(float, 0.0, min=0.0, max=100_000.0,
                    help="nominal frames/s (0: from metadata; sim: publish rate, 0 = 30)"),
        "timeout": Key(float, 5.0, min=0.001, max=DAY, help="seconds any one wait may take"),
        "resync": Key(bool, False, help="skip malformed data packets, counted as lost"),
        "tls": Key(bool, False, help="TLS on the command channel"),
        "tls_ca": Key(str, "", help="CA certificate file for TLS (empty: system store)"),
        "tls_verify": Key(bool, True, help="verify the publisher's certificate"),
        "points": Key(int, 100, min=1, max=1_000_000, help="sim: measurement points"),
        "nominal": Key(float, 50.0, choices=(50.0, 60.0), help="sim: grid frequency, Hz"),
        "realtime": Key(bool, True, help="sim: pace frames in real time (false: flat out)"),
        "faults": Key(str, "", help="sim: kind@at[xcount][:seconds][/every],…"),
        "tls_cert": Key(str, "", help="sim: PEM certificate (and key) to serve TLS with"),
    },
    open=open_sttp,
    help="STTP (IEEE 2664) subscriber",
)
