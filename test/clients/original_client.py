#!/usr/bin/python3
"""A client that behaves on the wire exactly as the original AI Farm client (client/client.py).

Written from reading the original; none of its code. What it does, as the original does:
  * connects with a Client-ID header; first frame its system-info object with no "type";
    then {"type": "task_request", "client_id"}; a heartbeat carrying system_info after a
    silence (the original's is 30 s; --idle here);
  * on {"type": "task", "data"}: reads data['requirements']['min_gpu_memory'],
    ['min_cpu_cores'] and ['min_ram'] (a missing key fails the task) and checks them as its
    resource manager does, in GiB and cores against this machine; reads config['name'],
    ['batch_size'], ['learning_rate'], ['epochs'], ['distributed'] and ['data_config'];
  * when config['distributed']: sends init_distributed with config['rank'] and takes the
    very next frame as the answer (status, data or the flat fields, shard_info), then
    distributed_ready;
  * GETs config['url'] (no credentials; headers Version, Accept, User-Agent), takes "code"
    from the JSON, runs its create_model() and, per batch, train_step(model, optimizer, batch);
  * queues task_progress (sent by a separate sender, at most one per 0.1 s), but sends
    distributed_cleanup, the next task_request and the task_result directly, so progress
    can follow the result; --hold-last-progress makes that race come out that way always;
  * ignores every frame type it does not know (registered, ack, no_task, pause, ...).

Unlike the original it reads frames while it trains (into an inbox, handled in order), only
to record what arrived while it was busy. Prints one JSON line per event on stdout; exits 0
after --tasks tasks, 1 on a failure. Debian's python3-websockets; run with /usr/bin/python3.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
import urllib.request
from datetime import datetime

import websockets


STARTED = time.monotonic()


def emit(event, **fields):
    print(json.dumps({"event": event, "t": round(time.monotonic() - STARTED, 3), **fields}), flush=True)


def meminfo_gib(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / (1024 ** 2)
    return 0.0


def system_info(client_id):
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = int(meminfo_gib("MemAvailable") * 1024 ** 3)
    load = os.getloadavg()[0] * 100.0 / (os.cpu_count() or 1)
    return {
        "id": client_id,
        "hostname": socket.gethostname(),
        "platform": {"system": platform.system(), "release": platform.release(),
                     "version": platform.version(), "machine": platform.machine(),
                     "processor": platform.processor()},
        "cpu": {"brand": platform.machine(), "cores_physical": os.cpu_count(),
                "cores_logical": os.cpu_count(),
                "frequency": {"current": None, "min": None, "max": None},
                "usage_percent": round(min(100.0, load), 1)},
        "ram": {"total": total, "available": available, "used": total - available,
                "percent": round((total - available) * 100.0 / total, 1)},
        "gpu": None,
        "session": {"created_at": datetime.now().isoformat(), "total_tasks_completed": 0,
                    "performance_metrics": {}},
    }


def check_requirements(req):
    """As the original's resource manager: cores, available RAM in GiB, free GPU memory in GiB."""
    if (os.cpu_count() or 1) < req["min_cpu_cores"]:
        return False
    if meminfo_gib("MemAvailable") < req["min_ram"]:
        return False
    if req["min_gpu_memory"] > 0:
        return False  # no GPU here
    return True


def load_model_code(url, version):
    request = urllib.request.Request(url, headers={
        "Version": version, "Accept": "application/json", "User-Agent": "AI-Farm-Client/1.0"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode("utf-8")
        if "application/json" in response.headers.get("content-type", ""):
            return json.loads(body).get("code", "")
        return body


class Client:
    def __init__(self, args):
        self.args = args
        self.id = args.id
        self.ws = None
        self.inbox = asyncio.Queue()
        self.outbox = asyncio.Queue()
        self.busy_with = None
        self.result_sent = asyncio.Event()
        self.done = 0

    async def reader(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind not in ("heartbeat_ack",):
                emit("frame", type=kind, busy_with=self.busy_with, frame=msg)
            if kind == "error":
                emit("server_error", code=msg.get("code"), message=msg.get("message"))
            await self.inbox.put(msg)

    async def sender(self):
        """The original's message queue: one queued message per 0.1 s at most."""
        last = 0.0
        while True:
            msg = await self.outbox.get()
            if msg.get("_hold"):
                await self.result_sent.wait()
                msg = {k: v for k, v in msg.items() if k != "_hold"}
            wait = 0.1 - (time.monotonic() - last)
            if wait > 0:
                await asyncio.sleep(wait)
            await self.ws.send(json.dumps(msg))
            if self.result_sent.is_set():
                emit("sent_after_result", type=msg["type"], task_id=msg.get("task_id"))
            last = time.monotonic()
            self.outbox.task_done()

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def next_frame(self):
        return await asyncio.wait_for(self.inbox.get(), self.args.timeout)

    async def execute(self, task):
        task_id = task["id"]
        config = json.loads(task["config"]) if isinstance(task["config"], str) else task["config"]
        req = task["requirements"]
        requirements = {"min_gpu_memory": req["min_gpu_memory"], "min_cpu_cores": req["min_cpu_cores"],
                        "min_ram": req["min_ram"]}
        emit("requirements", task_id=task_id, **requirements)
        if not check_requirements(requirements):
            raise RuntimeError("Insufficient resources for task")
        shard_info = None
        if config.get("distributed"):
            await self.send({"type": "init_distributed", "task_id": task_id, "client_id": self.id,
                             "rank": config.get("rank", 0)})
            response = await self.next_frame()
            if response.get("status") == "error":
                raise RuntimeError(f"Server error: {response.get('error')}")
            init = response.get("data", response)
            shard_info = init.get("shard_info", {"id": init.get("rank", 0),
                                                 "total_shards": init.get("world_size", 1),
                                                 "start_point": 0, "end_point": 100})
            emit("distributed", task_id=task_id, rank=init.get("rank"), world_size=init.get("world_size"),
                 config_rank=config.get("rank"), config_world_size=config.get("world_size"),
                 shard_info=shard_info, master_addr=init.get("master_addr"),
                 master_port=init.get("master_port"))
            await self.send({"type": "distributed_ready", "task_id": task_id, "client_id": self.id,
                             "rank": init.get("rank", 0)})
        name, batch_size, epochs = config["name"], config["batch_size"], config["epochs"]
        learning_rate, distributed, data_config = config["learning_rate"], config["distributed"], config["data_config"]
        code = load_model_code(config["url"], config.get("version", "latest"))
        module = {}
        exec(code, module)
        model, optimizer = module["create_model"]()
        start = (shard_info or {}).get("start_point", 0)
        end = (shard_info or {}).get("end_point", 100)
        data = [(i / 100.0, 3.0 * i / 100.0 + 1.0) for i in range(int(start), int(end))]
        metrics = {"loss": [], "accuracy": [], "progress": 0, "current_epoch": 0,
                   "total_epochs": epochs, "status": "running"}
        n_batches = max(1, len(data) // batch_size)
        progress = 0.0
        for epoch in range(epochs):
            epoch_loss = 0.0
            for b in range(n_batches):
                batch = data[b * batch_size:(b + 1) * batch_size]
                loss = module["train_step"](model, optimizer, batch)
                epoch_loss += loss
                progress = ((epoch * n_batches + b + 1) / (epochs * n_batches)) * (end - start) + start
                metrics.update({"progress": progress, "current_batch": b + 1, "total_batches": n_batches,
                                "current_loss": loss, "current_epoch": epoch + 1})
                await self.outbox.put({"type": "task_progress", "task_id": task_id, "client_id": self.id,
                                       "progress": progress, "metrics": dict(metrics),
                                       "timestamp": datetime.now().isoformat()})
                await asyncio.sleep(self.args.batch_sleep)
            metrics["loss"].append(epoch_loss / n_batches)
            metrics["accuracy"].append(max(0.0, 1.0 - epoch_loss / n_batches))
            last = {"type": "task_progress", "task_id": task_id, "client_id": self.id, "progress": progress,
                    "metrics": dict(metrics), "timestamp": datetime.now().isoformat()}
            if self.args.hold_last_progress and epoch == epochs - 1:
                last["_hold"] = True
            await self.outbox.put(last)
        metrics["status"] = "completed"
        completed_shard = {"id": (shard_info or {}).get("id"), "start_point": start, "end_point": end}
        model_path = f"./aggregated_models/task_{task_id}_shard_{completed_shard['id']}.pt"
        if distributed:
            await self.send({"type": "distributed_cleanup", "task_id": task_id, "client_id": self.id,
                             "rank": config.get("rank", 0), "completed_shard": completed_shard,
                             "model_path": model_path})
        await self.send({"type": "task_request", "client_id": self.id, "previous_task_id": task_id,
                         "completed_shard": completed_shard, "continue_training": True,
                         "final_model_path": model_path})
        emit("trained", task_id=task_id, name=name, learning_rate=learning_rate, data_config=data_config,
             model=model, losses=metrics["loss"])
        return {"status": "completed", "metrics": metrics, "checkpoint_path": model_path,
                "shard_info": shard_info}

    async def handle_task(self, msg):
        task = msg["data"]
        self.busy_with = task["id"]
        self.result_sent.clear()
        emit("task", task_id=task["id"], config=task["config"], requirements=task["requirements"],
             rank=task.get("rank"))
        try:
            result = await self.execute(task)
        except Exception as err:  # the original reports any failure as a failed result
            emit("task_failed", task_id=task["id"], error=f"{type(err).__name__}: {err}")
            result = {"status": "failed", "error": str(err), "error_log": f"Task execution failed: {err}"}
        await self.send({"type": "task_result", "task_id": task["id"], "client_id": self.id,
                         "status": result.get("status", "completed"), "metrics": result.get("metrics", {}),
                         "checkpoint_path": result.get("checkpoint_path"), "error_log": result.get("error_log"),
                         "shard_info": result.get("shard_info"), "rank": task.get("rank", 0)})
        self.result_sent.set()
        self.busy_with = None
        self.done += 1
        emit("result_sent", task_id=task["id"], status=result.get("status"))

    async def run(self):
        headers = {"Client-ID": self.id}
        async with websockets.connect(self.args.url, extra_headers=headers, max_size=None,
                                      compression=None, open_timeout=30) as ws:
            self.ws = ws
            reader = asyncio.create_task(self.reader())
            sender = asyncio.create_task(self.sender())
            await self.send(system_info(self.id))
            await self.send({"type": "task_request", "client_id": self.id})
            emit("connected", client_id=self.id)
            try:
                deadline = None
                while deadline is None or time.monotonic() < deadline:
                    if deadline is None and self.done >= self.args.tasks:
                        # Let queued progress go out, then read (and heartbeat) a while longer.
                        await asyncio.wait_for(self.outbox.join(), self.args.timeout)
                        deadline = time.monotonic() + self.args.linger
                        continue
                    wait = self.args.idle if deadline is None else max(0.01, min(self.args.idle, deadline - time.monotonic()))
                    try:
                        msg = await asyncio.wait_for(self.inbox.get(), wait)
                    except asyncio.TimeoutError:
                        if wait < self.args.idle:
                            continue  # the linger ended, not a silence
                        await self.send({"type": "heartbeat", "client_id": self.id,
                                         "timestamp": datetime.now().isoformat(),
                                         "system_info": system_info(self.id)})
                        emit("heartbeat")
                        continue
                    if msg.get("type") == "task" and self.done < self.args.tasks:
                        await self.handle_task(msg)
            finally:
                reader.cancel()
                sender.cancel()
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SERVER_URI: ws://host:port/ (?token=... for a worker token)")
    parser.add_argument("--id", required=True)
    parser.add_argument("--tasks", type=int, default=1, help="exit after this many tasks")
    parser.add_argument("--idle", type=float, default=30.0, help="silence before a heartbeat (s)")
    parser.add_argument("--batch-sleep", type=float, default=0.1, help="pause after each batch (s)")
    parser.add_argument("--hold-last-progress", action="store_true")
    parser.add_argument("--linger", type=float, default=1.0, help="read frames this long after the last task")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        return asyncio.run(Client(args).run())
    except Exception as err:
        emit("failed", error=f"{type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
