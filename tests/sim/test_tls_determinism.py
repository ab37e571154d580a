"""HTTPS under the simulator replays byte for byte, across processes.

examples/scenarios/https_website.py makes a full TLS 1.3 handshake per
request (key shares, ECDSA CertificateVerify, tickets). Twenty seeds run in
each of two fresh processes with different PYTHONHASHSEEDs must give the same
trace digests and the same pcaps; a primitive that cannot be seeded (ML-KEM
encapsulation) fails the run with a message naming it and the way around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

import looming.sim
from looming.errors import NotReplayable
from looming.sim.spec import load_scenario
from looming.sim.world import prepare, run
from looming.tls.constants import NamedGroup
from looming.tls.constants import SignatureScheme as S
from looming.tls.keyexchange import KeyShare, server_exchange
from looming.tls.signing import sign
from looming.unix.random import UnixRandom

SEEDS = range(1, 21)

# Run in a fresh interpreter: each seed's digest, pass/fail and pcap hashes.
SWEEP = """
import hashlib, sys, tempfile
from pathlib import Path
from looming.sim.spec import load_scenario
from looming.sim.world import prepare, run
scenario = load_scenario(sys.argv[1])
artifacts = prepare(scenario)
for seed in range(int(sys.argv[2]), int(sys.argv[3]) + 1):
    with tempfile.TemporaryDirectory() as out:
        result = run(scenario, seed, artifacts=artifacts, pcap_dir=Path(out))
        pcaps = " ".join(
            f"{p.name}={hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
            for p in sorted(Path(out).glob("*.pcap"))
        )
    print(seed, result.digest, "ok" if result.ok else "FAILED", result.checks, pcaps)
"""


def _sweep(scenario: Path, hash_seed: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SWEEP, str(scenario), str(SEEDS.start), str(SEEDS.stop - 1)],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_https_website_replays_identically_in_two_processes(app_copies: Path) -> None:
    scenario = app_copies / "scenarios" / "https_website.py"
    prepare(load_scenario(scenario))  # build once, before the two processes
    first, second = _sweep(scenario, "1"), _sweep(scenario, "2")
    assert len(first) == len(SEEDS)
    for expected_seed, line in zip(SEEDS, first, strict=True):
        seed, _digest, verdict, checks, pcaps = line.split(" ", 4)
        assert int(seed) == expected_seed
        assert verdict == "ok" and int(checks) == 10, line
        assert pcaps.count(".pcap=") == 3, line
    assert first == second
    # The seeds are not all alike: different runs, each replayed exactly.
    assert len({line.split()[1] for line in first}) == len(SEEDS)


def test_an_unseedable_primitive_fails_the_run_with_its_name(app_copies: Path) -> None:
    """A client sending an X25519MLKEM768 key share makes the server encapsulate,
    which draws from OpenSSL: the run fails, saying so and what to change."""
    source = (app_copies / "scenarios" / "https_website.py").read_text()
    offer = 'alpn_protocols=["http/1.1"],'
    assert offer in source
    source = source.replace(offer, offer + " key_share_groups=[0x11EC],")
    source = source.replace("duration=60.0", "duration=5.0")
    path = app_copies / "scenarios" / "https_website_mlkem.py"
    path.write_text(source)
    scenario = load_scenario(path)
    result = run(scenario, 1, artifacts=prepare(scenario))
    assert not result.ok
    refused = [f for f in result.failures if f.startswith("not replayable: server")]
    assert refused, result.failures
    assert "X25519MLKEM768: ML-KEM encapsulation" in refused[0]
    assert "leave X25519MLKEM768 out of the server's groups" in refused[0]


def _host_default_device_scenario(
    out: list[object], key: rsa.RSAPrivateKey, client: KeyShare
) -> looming.sim.Scenario:
    """A node that signs with RSA-PSS and answers an ML-KEM share using the
    host's default device (``UnixRandom()``) instead of its own."""
    scenario = looming.sim.Scenario("tls-host-default", duration=5.0)
    scenario.host("a")

    @scenario.main
    async def drive(world: looming.sim.World) -> None:
        async def as_node(stack: object) -> None:
            out.append(sign(key, S.RSA_PSS_RSAE_SHA256, b"data", UnixRandom()))
            try:
                server_exchange(NamedGroup.X25519MLKEM768, client.public, UnixRandom())
            except NotReplayable as error:
                out.append(str(error))

        await world.node("a").run(as_node)

    return scenario


def test_host_default_devices_inside_a_run_are_treated_as_simulated() -> None:
    key = rsa.generate_private_key(65537, 2048)
    client = KeyShare(NamedGroup.X25519MLKEM768, UnixRandom(seed=1))
    runs: list[list[object]] = [[], [], []]
    for out, seed in zip(runs, (3, 3, 4), strict=True):
        result = run(_host_default_device_scenario(out, key, client), seed, artifacts={})
        assert result.ok, result.failures
    (sig3, refusal), (sig3_again, _), (sig4, _) = runs
    assert sig3 == sig3_again != sig4  # the salt came from the run's seed
    assert "X25519MLKEM768: ML-KEM encapsulation" in str(refusal)
