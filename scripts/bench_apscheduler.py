#!/usr/bin/env python3
"""Peer for scripts/bench: APScheduler 3.x firing the recorder every second.

usage: bench_apscheduler.py RECORDER OUTFILE N

A BlockingScheduler with one CronTrigger(second="*") job that starts the same
recorder as cronwarden does (subprocess.Popen) with CRONWARDEN_SCHEDULED_FOR
set to the nominal second, N times, then shuts down. APScheduler does not hand
a job its scheduled time; the job takes the whole second it starts in, which is
exact as long as a fire is less than 1 s late (APScheduler never runs a cron job
early). The job's own start (ns) is appended to OUTFILE.wake, to split the delay
into scheduler wake-up and process spawn.
"""
import os
import subprocess
import sys
import threading
import time

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

recorder, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
wake = open(out + ".wake", "a", buffering=1)
sched = BlockingScheduler(timezone="UTC")
count = 0


def job():
    global count
    woke = time.time_ns()
    nominal = woke // 1_000_000_000
    env = dict(os.environ)
    env["CRONWARDEN_SCHEDULED_FOR"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nominal))
    env["CRONWARDEN_JOB"] = "apscheduler"
    p = subprocess.Popen([recorder, out], env=env, stdin=subprocess.DEVNULL)
    p.wait()
    wake.write(f"{nominal * 1_000_000_000} {woke}\n")
    count += 1
    if count >= n:
        threading.Thread(target=sched.shutdown, kwargs={"wait": False}, daemon=True).start()


sched.add_job(job, CronTrigger(second="*", timezone="UTC"), max_instances=1,
              coalesce=True, misfire_grace_time=1)
# A bound of our own, whatever happens to the job.
threading.Timer(n + 10, lambda: os._exit(3)).start()
sched.start()
os._exit(0)
