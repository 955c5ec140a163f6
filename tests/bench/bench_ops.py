"""make bench, first figures: idle memory per instance and the time from
kill -9 of an instance to its role being served again.

Run by `make bench` (never by `make test`): it prints figures and how they
compare with the budget, and exits 0 whatever they are. Real redis-server,
the Discord simulator, the instances built in BOT_BIN_DIR (default: the
repository root)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402
import simclient  # noqa: E402

ROLES = ("chat", "image", "video", "admin")
RSS_BUDGET_KB = 10 * 1024
TAKEOVER_BUDGET_S = 3.0


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def private_dirty_kb(pid):
    total = 0
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                total += int(line.split()[1])
    return total


def main():
    with harness.TestContext("bench") as t:
        redis = t.redis()
        sim = simclient.start(t)

        def env(**kw):
            e = {"REDIS_URL": redis.url, "HEALTH_PORT": t.free_port()}
            e.update(sim.bot_env())
            e.update(kw)
            return e
        insts = {}
        for role in ROLES:
            insts[role] = t.instance(role, env=env(GATEWAY="on" if role == "admin" else "off"))
            insts[role].wait_healthy(15)
        time.sleep(5)  # idle: connected, beating, nothing to do
        print("idle memory (RSS / private dirty), budget %d kB RSS:" % RSS_BUDGET_KB)
        for role, inst in insts.items():
            pid = inst.proc.pid
            rss, pd = status_kb(pid, "VmRSS"), private_dirty_kb(pid)
            print("  %-6s %6d kB / %5d kB  ratio to budget %.2f" % (role, rss, pd, rss / RSS_BUDGET_KB))
        admin, chat = insts["admin"], insts["chat"]
        times = []
        for n in range(3):
            time.sleep(4.5)
            chat.kill()
            t0 = time.time()
            while time.time() - t0 < 15:
                recs = [r for r in admin.find_records(msg="routing: taking over the role")
                        if r.get("for_role") == "chat"]
                if len(recs) > n:
                    break
                time.sleep(0.01)
            times.append(time.time() - t0)
            chat.start()
            chat.wait_healthy(15)
        print("kill -9 of chat -> admin serves its stream (FAILOVER_AFTER_MS default), budget %.1f s:"
              % TAKEOVER_BUDGET_S)
        for s in times:
            print("  %.2f s  ratio to budget %.2f" % (s, s / TAKEOVER_BUDGET_S))
        print("not measured yet: gateway routing events/s, 10k concurrent chats, interaction -> ack p99")
    return 0


if __name__ == "__main__":
    sys.exit(main())
