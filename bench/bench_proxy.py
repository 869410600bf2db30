"""The proxy under load: clients in three languages through two gunicorn hosts.

    .venv/bin/python bench/bench_proxy.py [--seconds 60] [--samples 60]

Everything runs on loopback: the sandbox (started here) stands in for CC and delays every
arrival by 0-20 ms; a throw-away SQLite database holds the portal and the key's ledger; two
portal "hosts" are two `gunicorn ccportal.wsgi` processes on their own ports (each read from
`gunicorn.conf.py`: 2 workers x 16 threads), sharing that database as hosts share PostgreSQL.

1. Overhead: calls one at a time, spaced so no call waits for a slot, in rounds of a direct
   `cc_call` in this process and the same `GET /contact_lists` through the proxy (the hosts in
   turn), once with `http.client` and once with `requests` as the application's client. The
   proxy's overhead is the proxied latency minus the direct one, p50 and p99, taken per pair
   after CC's own time for each call (its latency and slot wait in the call log) is taken off
   both, so the sandbox's jitter does not count as overhead. It is judged with `http.client`:
   an application pays for its HTTP client whether it calls CC or the proxy, and `requests`
   costs ~0.8 ms a call of its own here; its figure is printed beside.
2. Load: 8 client processes call `GET /proxy/v3/contact_lists` back to back for `--seconds`,
   each alternating between the hosts: 6 Python (`requests`), one Node (`fetch`), one `curl`
   loop, all on the interactive lane (a portal token's default; background callers wait behind
   interactive ones by design). A client told 429 sleeps `Retry-After`, as CC clients do.

3. Connections: 500 connections are opened and held, then each asks once at the same moment
   (one asyncio loop, so the clients leave the CPUs to the hosts), against the key the burst
   saturates: the calls within the lane's maximum wait are answered, the rest get 429 with
   Retry-After at once; none may fail for want of a worker (5xx or a dropped connection).
4. Streaming: a 100,000-contact export CSV through the proxy; the growth of the web workers'
   peak RSS (VmHWM) over their RSS before.

Printed: the key's utilisation against its 4 calls/s (answered 200s over the window after a
2 s warm-up), the throttled 429s CC (the sandbox) answered, ccportal's own 429s and how many
carried Retry-After, answers per client, and the overhead. Targets: utilisation >= 95%; 0
throttled; every portal 429 with Retry-After; no other error; overhead p50 <= 3 ms, p99 <= 15 ms;
500 connections without a 5xx or a dropped one; streaming peak RSS growth <= 50 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import REPO, portal_environment, portal_ready

sys.path.insert(0, str(REPO))

REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
SECRET = "bench-secret"
JITTER_MS = 20
WARM_UP = 2.0
PYTHON_CLIENTS = 6
CONNECTIONS = 500
EXPORT_CONTACTS = 100_000
GUNICORN = [sys.executable, "-m", "gunicorn", "ccportal.wsgi"]

NODE_CLIENT = r"""
const fs = require("fs");
const hosts = process.env.HOSTS.split(",");
const until = Number(process.env.UNTIL) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await sleep(Number(process.env.START) * 1000 - Date.now());
  const lines = [];
  for (let i = 0; Date.now() < until; i++) {
    const t0 = performance.now();
    const r = await fetch(`${hosts[i % 2]}/proxy/v3/contact_lists`, {
      headers: { Authorization: `Bearer ${process.env.TOKEN}`, "X-CC-Lane": process.env.LANE },
    });
    await r.arrayBuffer();
    const ms = performance.now() - t0;
    const retry = r.headers.get("retry-after");
    lines.push(`${Date.now() / 1000} ${r.status} ${retry ?? "-"} ${ms.toFixed(1)}`);
    if (r.status === 429) await sleep(Number(retry || 1) * 1000);
  }
  fs.writeFileSync(process.env.OUT, lines.join("\n") + "\n");
})();
"""

CURL_CLIENT = r"""
sleep "$(python3 -c "import time; print(max(0, $START - time.time()))")"
i=0
while python3 -c "import sys, time; sys.exit(time.time() >= $UNTIL)"; do
  host=$([ $((i % 2)) -eq 0 ] && echo "${HOSTS%%,*}" || echo "${HOSTS##*,}")
  got=$(curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H "X-CC-Lane: $LANE" \
        -w '%{http_code} %header{retry-after} %{time_total}' "$host/proxy/v3/contact_lists")
  set -- $got
  status=$1; if [ $# -eq 3 ]; then retry=$2; secs=$3; else retry=-; secs=$2; fi
  echo "$(date +%s.%N) $status $retry $(python3 -c "print(round($secs * 1000, 1))")" >> "$OUT"
  [ "$status" = 429 ] && sleep "${retry/-/1}"
  i=$((i + 1))
done
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _python_client(job: dict) -> None:
    """Back-to-back proxied calls, alternating hosts; one line per answer into job["out"]."""
    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {job['token']}", "X-CC-Lane": job["lane"]}
    time.sleep(max(0.0, job["start"] - time.time()))
    lines, n = [], 0
    while time.time() < job["until"]:
        began = time.perf_counter()
        answer = session.get(
            f"{job['hosts'][n % 2]}/proxy/v3/contact_lists", headers=headers, timeout=120
        )
        ms = (time.perf_counter() - began) * 1000
        retry = answer.headers.get("Retry-After", "-")
        lines.append(f"{time.time()} {answer.status_code} {retry} {ms:.1f}\n")
        if answer.status_code == 429:
            time.sleep(float(retry) if retry != "-" else 1.0)
        n += 1
    Path(job["out"]).write_text("".join(lines))


def _workers(pid: int) -> list[int]:
    """gunicorn's worker processes: the children of its master ``pid`` (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                found.append(int(status.parent.name))
        except OSError:
            continue
    return found


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _connections(hosts: list[str], token: str) -> list[tuple[int, str, float]]:
    """CONNECTIONS callers, each on a connection of its own opened (and held) first, sending
    their requests at the same moment: (status, Retry-After or "-", ms from send to answer).
    One asyncio loop drives them all, so the clients take next to no CPU from the hosts."""
    import asyncio
    from urllib.parse import urlsplit

    async def run() -> list[tuple[int, str, float]]:
        opened = []
        for n in range(CONNECTIONS):
            where = urlsplit(hosts[n % 2])
            opened.append(await asyncio.open_connection(where.hostname, where.port))
        request = (
            "GET /proxy/v3/contact_lists HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ).encode()

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            began = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=120)
                ms = (time.perf_counter() - began) * 1000
                await reader.read()
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                return (0, type(exc).__name__, (time.perf_counter() - began) * 1000)
            finally:
                writer.close()
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            retry = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in lines[1:]
                    if line.lower().startswith("retry-after:")
                ),
                "-",
            )
            return (status, retry, ms)

        return list(await asyncio.gather(*(one(r, w) for r, w in opened)))

    return asyncio.run(run())


def _stream_export(sandbox, owner, host: str, token: str, master: int) -> tuple[int, int, float]:
    """Export EXPORT_CONTACTS contacts through ``host``; (CSV lines, bytes, peak RSS growth
    in MiB of the host's workers)."""
    import requests

    sandbox.seed_contacts(owner, count=EXPORT_CONTACTS)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "X-CC-Lane": "background"}
    made = session.post(
        f"{host}/proxy/v3/activities/contact_exports",
        json={"fields": ["email_address", "first_name", "last_name"]},
        headers=headers,
        timeout=120,
    )
    assert made.status_code == 201, made.text[:300]
    activity = made.json()["activity_id"]
    for _ in range(1000):
        sandbox.advance_clock(5)
        state = session.get(f"{host}/proxy/v3/activities/{activity}", headers=headers, timeout=120)
        if state.json()["state"] == "completed":
            break
    results = state.json()["_links"]["results"]["href"].removeprefix("/v3")
    workers = _workers(master)
    before = {pid: _memory_kib(pid, "VmRSS") for pid in workers}
    lines = size = 0
    with session.get(
        f"{host}/proxy/v3{results}",
        headers={**headers, "Accept": "text/csv"},
        stream=True,
        timeout=300,
    ) as answer:
        assert answer.status_code == 200, answer.text[:300]
        for chunk in answer.iter_content(chunk_size=65536):
            size += len(chunk)
            lines += chunk.count(b"\n")
    growth = max(_memory_kib(pid, "VmHWM") - before[pid] for pid in workers)
    return lines, size, growth / 1024


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _connected_account(sandbox):
    from django.utils import timezone

    from integrations.models import AccountStatus, ConnectedAccount
    from integrations.services.keys import api_key_create

    client_id = f"bench-proxy-{os.getpid()}"
    sandbox.register_client(client_id, redirect_uris=[REDIRECT_URI], client_secret=SECRET)
    api_key = api_key_create(
        name="Benchmark proxy",
        client_id=client_id,
        client_secret=SECRET,
        redirect_uri=REDIRECT_URI,
    )
    owner = sandbox.create_account("proxy-bench@example.com", name="Proxy bench")
    sandbox.seed_list(owner, "Newsletter")
    tokens = sandbox.mint_tokens(client_id, account=owner)
    return owner, ConnectedAccount.objects.create(
        api_key=api_key,
        cc_user_id=owner.sub,
        label="Proxy bench",
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        access_expires_at=timezone.now() + dt.timedelta(seconds=tokens["expires_in"]),
        scopes=tokens["scope"].split(),
        status=AccountStatus.ACTIVE,
        token_version=1,
    )


def _overhead(account, hosts: list[str], token: str, samples: int) -> dict[str, list[float]]:
    """Spaced rounds of a direct ``cc_call`` and the same call through the proxy, once with
    ``http.client`` and once with ``requests`` as the application's client.

    Returned, in ms: ``direct`` and ``proxied`` latencies, and per round the proxy's overhead
    net of CC's own time (``net``, the lean client; ``net_requests``). CC's time for each call
    (its latency and slot wait, from the call log) is taken off both sides of a pair, so the
    sandbox's 0-20 ms jitter, which a difference of medians would carry as noise, cancels
    out. The overhead is judged with ``http.client``: an application pays for its own HTTP
    client whether it calls CC or the proxy, and ``requests`` alone costs ~0.8 ms a call on
    this machine; its figure is printed beside it."""
    import http.client
    from urllib.parse import urlsplit

    import requests

    from integrations.models import ApiCall
    from integrations.services.gateway import cc_call

    def cc_time(call: ApiCall) -> float:
        return call.latency_ms + call.slot_wait_ms

    path = "/proxy/v3/contact_lists"
    headers = {"Authorization": f"Bearer {token}"}
    lean = [http.client.HTTPConnection(urlsplit(host).netloc, timeout=60) for host in hosts]
    session = requests.Session()

    def with_lean(n: int) -> tuple[int, str]:
        connection = lean[n % 2]
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        return answer.status, answer.getheader("X-CC-Call-Id") or body.decode()[:300]

    def with_requests(n: int) -> tuple[int, str]:
        answer = session.get(f"{hosts[n % 2]}{path}", headers=headers, timeout=60)
        return answer.status_code, answer.headers.get("X-CC-Call-Id") or answer.text[:300]

    for n in range(len(hosts) * 4):  # each gunicorn worker loads Django on its first request
        with_lean(n), with_requests(n)
        time.sleep(0.3)
    figures: dict[str, list[float]] = {"direct": [], "proxied": [], "net": [], "net_requests": []}
    for n in range(samples):
        began = time.perf_counter()
        cc_call(account=account, method="GET", path="/contact_lists")
        direct_ms = (time.perf_counter() - began) * 1000
        direct_net = direct_ms - cc_time(ApiCall.objects.order_by("-pk").first())
        figures["direct"].append(direct_ms)
        for client, key in ((with_lean, "net"), (with_requests, "net_requests")):
            time.sleep(0.3)  # past the last slot: no call waits, and the hosts are idle
            began = time.perf_counter()
            status, call_id = client(n)
            proxied_ms = (time.perf_counter() - began) * 1000
            assert status == 200, call_id
            proxied_net = proxied_ms - cc_time(ApiCall.objects.get(pk=int(call_id)))
            figures[key].append(proxied_net - direct_net)
            if key == "net":
                figures["proxied"].append(proxied_ms)
        time.sleep(0.3)
    for connection in lean:
        connection.close()
    return figures


def _read(path: Path) -> list[tuple[float, int, str, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        at, status, retry, ms = line.split()
        rows.append((float(at), int(status), retry, float(ms)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase")
    parser.add_argument("--samples", type=int, default=60, help="overhead pairs")
    options = parser.parse_args()
    missing = [tool for tool in ("node", "curl") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)} on PATH")
        return 1

    from integrations.sandbox.process import start_sandbox

    var_dir = tempfile.mkdtemp(prefix="ccportal-bench-proxy-")
    missed: list[str] = []
    hosts_started: list[subprocess.Popen] = []
    clients: list[subprocess.Popen] = []
    try:
        with start_sandbox(port=0) as sandbox_process:
            sandbox = sandbox_process.control
            env = portal_environment(var_dir, sandbox_url=sandbox_process.url)
            portal_ready(env)
            from integrations.services.proxy_tokens import proxy_token_create

            owner, account = _connected_account(sandbox)
            token = proxy_token_create(name="bench", accounts=[account])[1]
            sandbox.set_jitter(0, JITTER_MS)

            ports = [_free_port(), _free_port()]
            host_env = {**os.environ, **env, "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "16"}
            for port in ports:
                hosts_started.append(
                    subprocess.Popen(
                        [*GUNICORN, "--bind", f"127.0.0.1:{port}", "--access-logfile", "/dev/null"],
                        cwd=REPO,
                        env=host_env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + 60
            while not all(_listening(p) for p in ports):
                if time.monotonic() > deadline:
                    print("the gunicorn hosts did not start")
                    return 1
                time.sleep(0.2)
            hosts = [f"http://127.0.0.1:{p}" for p in ports]
            print(
                f"Proxy: 2 gunicorn hosts (2 workers x 16 threads each), {os.cpu_count()} "
                f"CPUs, SQLite ledger, sandbox jitter 0-{JITTER_MS} ms, standard key 4/s"
            )

            figures = _overhead(account, hosts, token, options.samples)
            direct, proxied, net = figures["direct"], figures["proxied"], figures["net"]
            over50, over99 = _percentile(net, 0.5), _percentile(net, 0.99)
            print(
                f"  overhead ({options.samples} spaced rounds): direct cc_call p50/p99 "
                f"{_percentile(direct, 0.5):.1f}/{_percentile(direct, 0.99):.1f} ms, proxied "
                f"{_percentile(proxied, 0.5):.1f}/{_percentile(proxied, 0.99):.1f} ms; proxy "
                f"overhead net of CC's time per pair p50 {over50:.1f} ms, p99 {over99:.1f} ms "
                f"(http.client; with requests as the client p50 "
                f"{_percentile(figures['net_requests'], 0.5):.1f} ms, p99 "
                f"{_percentile(figures['net_requests'], 0.99):.1f} ms)"
            )

            sandbox.reset_stats()
            start = time.time() + 3.0
            until = start + options.seconds
            common = {"HOSTS": ",".join(hosts), "TOKEN": token}
            outputs: dict[str, Path] = {}
            jobs = []
            for n in range(PYTHON_CLIENTS):
                out = Path(var_dir) / f"python{n}.txt"
                outputs[f"python {n + 1}"] = out
                jobs.append(
                    {
                        "hosts": hosts,
                        "token": token,
                        "lane": "interactive",
                        "start": start,
                        "until": until,
                        "out": str(out),
                    }
                )
            for name, argv, lane in (
                ("node", ["node", "-e", NODE_CLIENT], "interactive"),
                ("curl", ["bash", "-c", CURL_CLIENT], "interactive"),
            ):
                out = Path(var_dir) / f"{name}.txt"
                outputs[name] = out
                clients.append(
                    subprocess.Popen(
                        argv,
                        env={
                            **os.environ,
                            **common,
                            "LANE": lane,
                            "START": str(start),
                            "UNTIL": str(until),
                            "OUT": str(out),
                        },
                    )
                )
            context = multiprocessing.get_context("spawn")
            with context.Pool(PYTHON_CLIENTS) as pool:
                pool.map(_python_client, jobs, chunksize=1)
            for client in clients:
                client.wait(timeout=180)
            stats = sandbox.stats(account.api_key.client_id)

            window = (start + WARM_UP, until)
            answered = portal_429 = with_retry = errors = 0
            print(f"  load: 8 clients for {options.seconds:.0f} s")
            for name, out in outputs.items():
                rows = _read(out)
                ok = [r for r in rows if r[1] == 200]
                refused = [r for r in rows if r[1] == 429]
                errors += len(rows) - len(ok) - len(refused)
                portal_429 += len(refused)
                with_retry += sum(r[2] != "-" for r in refused)
                answered += sum(window[0] <= r[0] <= window[1] for r in ok)
                latency = [r[3] for r in ok]
                print(
                    f"    {name:9s} {len(ok):4d} answered, {len(refused):3d} portal 429, "
                    f"latency p50 {_percentile(latency, 0.5):6.0f} ms "
                    f"p99 {_percentile(latency, 0.99):6.0f} ms"
                )
            rate = answered / (window[1] - window[0])
            utilisation = rate / 4
            print(
                f"  key: {rate:.2f} calls/s answered = {utilisation:.1%} of 4/s; CC throttled "
                f"429s {stats.throttled}; portal 429s {portal_429} ({with_retry} with "
                f"Retry-After); other errors {errors}"
            )
            if utilisation < 0.95:
                missed.append(f"utilisation {utilisation:.1%} < 95%")
            if stats.throttled:
                missed.append(f"{stats.throttled} throttled by CC")
            if with_retry != portal_429:
                missed.append("a portal 429 without Retry-After")
            if errors:
                missed.append(f"{errors} other errors")
            if over50 > 3 or over99 > 15:
                missed.append(f"overhead p50/p99 {over50:.1f}/{over99:.1f} ms > 3/15")

            time.sleep(2)  # the load's last slots go by
            held = _connections(hosts, token)
            served = [ms for status, _, ms in held if status == 200]
            told = [ms for status, retry, ms in held if status == 429 and retry != "-"]
            failed = [(status, retry) for status, retry, _ in held if status not in (200, 429)]
            bare = sum(status == 429 and retry == "-" for status, retry, _ in held)
            print(
                f"  {CONNECTIONS} connections at once: {len(served)} answered (p99 "
                f"{_percentile(served, 0.99):.0f} ms), {len(told)} told 429 + Retry-After (p50 "
                f"{_percentile(told, 0.5):.0f} ms, p99 {_percentile(told, 0.99):.0f} ms), "
                f"{len(failed)} failed, {bare} 429 without Retry-After"
            )
            if failed or bare:
                missed.append(f"{len(failed)} of {CONNECTIONS} connections failed: {failed[:3]}")

            lines, size, growth = _stream_export(
                sandbox, owner, hosts[0], token, hosts_started[0].pid
            )
            print(
                f"  streaming: a {EXPORT_CONTACTS:,}-contact export ({lines:,} lines, "
                f"{size / 1e6:.1f} MB) through the proxy; web workers' peak RSS grew "
                f"{growth:.1f} MiB"
            )
            if lines != EXPORT_CONTACTS + 2 and lines != EXPORT_CONTACTS + 1:
                missed.append(f"the export had {lines} lines")
            if growth > 50:
                missed.append(f"streaming RSS growth {growth:.1f} MiB > 50")
    finally:
        for process in [*clients, *hosts_started]:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
        shutil.rmtree(var_dir, ignore_errors=True)
    print("\nall targets met" if not missed else "\nMISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
