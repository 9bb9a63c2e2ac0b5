#!/usr/bin/python3
"""A worker speaking only the original AI Farm client's protocol (the seed's messages).

It does what the original Python client does on the wire:
  1. first frame: the system-info object, with no "type" field;
  2. {"type": "task_request", "client_id": ...};
  3. waits for {"type": "task", "data": {...}};
  4. a task_progress after each batch (string task_id, no attempt), with the original's
     metrics keys, then a final task_result.
Messages the original did not know (registered, ack, heartbeat_ack) are read and ignored.

Uses Debian's python3-websockets (run it with /usr/bin/python3). Prints one JSON line per
event on stdout for the test that drives it; exits 0 once its result is acknowledged.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
import uuid

import websockets


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def system_info(client_id):
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return {
        "id": client_id,
        "hostname": socket.gethostname(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        },
        "cpu": {
            "brand": platform.processor() or platform.machine(),
            "cores_physical": os.cpu_count(),
            "cores_logical": os.cpu_count(),
            "frequency": {"current": 0.0, "min": 0.0, "max": 0.0},
            "usage_percent": 0.0,
        },
        "ram": {
            "total": total,
            "available": available,
            "used": total - available,
            "percent": round((total - available) * 100.0 / total, 1),
        },
        "gpu": None,
        "session": {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "total_tasks_completed": 0,
            "performance_metrics": {},
        },
    }


async def receive(ws, timeout):
    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if msg.get("type") == "error":
        emit("server_error", code=msg.get("code"), message=msg.get("message"))
    return msg


async def run(args):
    client_id = args.id or str(uuid.uuid4())
    url = args.url + (("&" if "?" in args.url else "?") + "token=" + args.token if args.token else "")
    async with websockets.connect(url, max_size=2**20) as ws:
        await ws.send(json.dumps(system_info(client_id)))
        await ws.send(json.dumps({"type": "heartbeat", "client_id": client_id, "timestamp": time.time(),
                                  "system_info": system_info(client_id)}))
        await ws.send(json.dumps({"type": "task_request", "client_id": client_id}))
        emit("requested", client_id=client_id)

        while True:
            msg = await receive(ws, args.timeout)
            kind = msg.get("type")
            if kind == "task":
                break
            if kind == "registered":
                emit("registered", client_id=msg.get("client_id"))
            elif kind == "no_task":
                await asyncio.sleep(0.3)
                await ws.send(json.dumps({"type": "task_request", "client_id": client_id}))

        data = msg["data"]
        task_id = str(data["id"])
        config = data.get("config") or {}
        emit("task", task_id=task_id, config=config)
        epochs = int(config.get("epochs", 2))
        batches = int(config.get("batches", 3))
        losses, accuracies = [], []
        for epoch in range(epochs):
            for batch in range(batches):
                step = epoch * batches + batch + 1
                loss = 1.0 / (1 + step)
                losses.append(loss)
                accuracies.append(1.0 - loss)
                metrics = {
                    "loss": losses, "accuracy": accuracies,
                    "current_epoch": epoch + 1, "total_epochs": epochs,
                    "current_batch": batch + 1, "total_batches": batches,
                    "current_loss": loss,
                }
                await ws.send(json.dumps({
                    "type": "task_progress", "task_id": task_id, "client_id": client_id,
                    "progress": step * 100.0 / (epochs * batches), "metrics": metrics,
                    "timestamp": time.time(),
                }))
                await asyncio.sleep(0.05)

        await ws.send(json.dumps({
            "type": "task_result", "task_id": task_id, "client_id": client_id, "status": "completed",
            "metrics": {"loss": losses, "accuracy": accuracies, "final_loss": losses[-1]},
            "checkpoint_path": None, "error_log": None, "rank": 0,
        }))
        # The original did not wait; we do, so that the test knows the server has it.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            msg = await receive(ws, args.timeout)
            if msg.get("type") == "ack" and msg.get("of") == "task_result":
                emit("done", task_id=task_id)
                return 0
            if msg.get("type") == "error":
                return 1
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://host:port/ of the gateway")
    parser.add_argument("--token", help="worker token, sent as ?token= (omit for anonymous mode)")
    parser.add_argument("--id", help="client id (default: a new uuid4, as the original)")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except Exception as err:  # report anything for the test, which reads stdout
        emit("failed", error=f"{type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
