#!/usr/bin/env python3
"""Tables for scripts/netem-swarm.sh: reads RUN_DIR/results.tsv and the
counter samples, prints markdown, and writes one link-utilisation CSV per
round (links-SCENARIO-CLIENT-rROUND.csv: seconds since the start, node,
upload and download in Mbit/s over each quarter second).

    report.py RUN_DIR

results.tsv rows (tab-separated):
  scenario NAME SIZE_BYTES LEECHERS U_SEED_MBIT SUM_U_LEECHERS_MBIT D_MIN_MBIT
  round NAME CLIENT ROUND T0 T_END OUTCOME NOBODY PIECES
  node NAME CLIENT ROUND NODE ROLE UP_MBIT START_S DONE_S UP_BYTES DOWN_BYTES FRACTION DIGEST
(DONE_S is - for a leecher that did not finish; DIGEST ok, bad or -.)
"""
import collections
import os
import statistics
import sys

run = sys.argv[1]
scen, rounds, nodes = {}, [], collections.defaultdict(list)
with open(os.path.join(run, "results.tsv")) as f:
    for line in f:
        r = line.rstrip("\n").split("\t")
        if r[0] == "scenario":
            scen[r[1]] = dict(size=int(r[2]), n=int(r[3]), us=float(r[4]), ul=float(r[5]), dmin=float(r[6]))
        elif r[0] == "round":
            rounds.append(dict(s=r[1], c=r[2], r=int(r[3]), t0=float(r[4]), t1=float(r[5]),
                               outcome=r[6], nobody=int(r[7]), pieces=int(r[8])))
        elif r[0] == "node":
            nodes[(r[1], r[2], int(r[3]))].append(dict(
                node=r[4], role=r[5], up_mbit=float(r[6]), start=float(r[7]),
                done=None if r[8] == "-" else float(r[8]), up=int(r[9]), down=int(r[10]),
                frac=float(r[11]), digest=r[12]))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def span(xs, fmt="%.1f"):
    if not xs:
        return "–"
    return (fmt + " [" + fmt + "–" + fmt + "]") % (med(xs), min(xs), max(xs))


def bounds(p):
    bits = p["size"] * 8
    lb = max(bits / (p["us"] * 1e6), p["n"] * bits / ((p["us"] + p["ul"]) * 1e6))
    if p["dmin"] > 0:
        lb = max(lb, bits / (p["dmin"] * 1e6))
    return lb, p["n"] * bits / (p["us"] * 1e6)


def samples(name):
    """node -> [(t, up, down)] from samples-NAME.txt."""
    out = collections.defaultdict(list)
    path = os.path.join(run, "samples-%s.txt" % name)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                t, node, up, down = line.split()
                out[node].append((float(t), int(up), int(down)))
    return out


def timeline(name, p, rs, smp):
    """Each client's first round, second by second: the seeder's upload, the
    leechers' total upload (Mbit/s) and how many leechers upload at 10 % of
    their cap or more."""
    first = {}
    for r in rs:
        first.setdefault(r["c"], r)
    if not first:
        return
    print("First round, second by second: the seeder's upload and the leechers' total upload in Mbit/s, "
          "and how many leechers upload at ≥ 10 % of their cap:\n")
    print("```")
    for c, r in first.items():
        caps = {x["node"]: x["up_mbit"] for x in nodes[(name, c, r["r"])]}
        secs = int(r["t1"] - r["t0"]) + 1
        seed, leech, busy = [0.0] * secs, [0.0] * secs, [0] * secs
        for node, xs in smp.items():
            if node not in caps:
                continue
            per = [0.0] * secs
            for (ta, ua, _), (tb, ub, _) in zip(xs, xs[1:]):
                k = int(tb - r["t0"] - 1e-9)
                if 0 <= k < secs and tb > r["t0"] and ub >= ua:
                    per[k] += (ub - ua) * 8 / 1e6
            for k in range(secs):
                if node == "s":
                    seed[k] = per[k]
                else:
                    leech[k] += per[k]
                    busy[k] += per[k] >= 0.1 * caps[node]
        print("%-13s seeder  %s" % (c, " ".join("%3.0f" % v for v in seed)))
        print("%-13s leechers%s" % ("", " ".join("%3.0f" % v for v in leech)))
        print("%-13s busy    %s" % ("", " ".join("%3d" % v for v in busy)))
    print("```\n")


for name, p in scen.items():
    lb, cs = bounds(p)
    F = p["size"]
    rs = [r for r in rounds if r["s"] == name]
    clients = list(dict.fromkeys(r["c"] for r in rs))
    smp = samples(name)
    print("### %s: %d MiB, 1 seeder at %g Mbit/s + %d leechers (Σ upload %g Mbit/s)%s\n" % (
        name, F >> 20, p["us"], p["n"], p["ul"],
        ", download cap %g Mbit/s" % p["dmin"] if p["dmin"] > 0 else ""))
    print("| | last leecher done, median [min–max] | ÷ lower bound | seeder uploaded (copies) "
          "| each leecher uploaded (copies, mean) | seeder link busy | leecher links busy | leechers done |")
    print("|---|---|---|---|---|---|---|---|")
    print("| lower bound max(F/u_s, N·F/(u_s+Σu_i)) | %.1f s | 1.00 | 1.00 | | | | |" % lb)
    print("| client-server bound N·F/u_s | %.1f s | %.2f | %d | 0 | | | |" % (cs, cs / lb, p["n"]))
    per_round_done = {}
    for c in clients:
        cr = [r for r in rs if r["c"] == c]
        alldone, seedc, leechc, seedbusy, leechbusy, done, total = [], [], [], [], [], 0, 0
        for r in cr:
            ns = nodes[(name, c, r["r"])]
            leech = [x for x in ns if x["role"] != "seed"]
            seed = [x for x in ns if x["role"] == "seed"]
            total += len(leech)
            done += sum(1 for x in leech if x["done"] is not None)
            el = r["t1"] - r["t0"]
            if r["outcome"] == "done":
                last = max(x["done"] for x in leech)
                alldone.append(last)
                per_round_done[(c, r["r"])] = last
                el = last
            if seed:
                seedc.append(seed[0]["up"] / F)
                seedbusy.append(100 * seed[0]["up"] * 8 / (seed[0]["up_mbit"] * 1e6 * el))
            if leech:
                leechc.append(statistics.mean(x["up"] / F for x in leech))
                cap = sum(x["up_mbit"] for x in leech) * 1e6 * el
                leechbusy.append(100 * sum(x["up"] for x in leech) * 8 / cap)
        print("| %s | %s | %s | %s | %s | %s %% | %s %% | %d / %d |" % (
            c, span(alldone) + " s" if alldone else "– (not all done)",
            "%.2f" % (med(alldone) / lb) if alldone else "–",
            span(seedc, "%.2f"), span(leechc, "%.2f"), span(seedbusy, "%.0f"), span(leechbusy, "%.0f"),
            done, total))
    print()
    if len(clients) > 1:
        for i, a in enumerate(clients):
            for b in clients[i + 1:]:
                ratios = [per_round_done[(a, k)] / per_round_done[(b, k)] for (cc, k) in per_round_done
                          if cc == a and (b, k) in per_round_done]
                if ratios:
                    print("- %s ÷ %s, same round: %s" % (a, b, span(ratios, "%.2f")))
        print()
    print("Per leecher, medians over rounds: seconds from its start to the whole file (or how much of the "
          "file it held at the end), and its upload in copies of the file:\n")
    leechers = sorted({x["node"] for k, v in nodes.items() if k[0] == name for x in v if x["role"] != "seed"},
                      key=lambda s: int(s[1:]) if s[1:].isdigit() else 0)
    print("| client | " + " | ".join(leechers) + " |")
    print("|---|" + "---|" * len(leechers))
    for c in clients:
        cells = []
        for ln in leechers:
            xs = [x for r in rs if r["c"] == c for x in nodes[(name, c, r["r"])] if x["node"] == ln]
            d = [x["done"] - x["start"] for x in xs if x["done"] is not None]
            cell = "%.1f s" % med(d) if len(d) == len(xs) and d else "%d%% held" % round(100 * med([x["frac"] for x in xs]))
            cell += ", %.2f up" % med([x["up"] / F for x in xs])
            if xs and xs[0]["up_mbit"] != p["us"]:
                cell += " (%g Mbit/s)" % xs[0]["up_mbit"]
            if xs and xs[0]["role"] in ("late", "churn"):
                cell += " (joined at %.1f s)" % med([x["start"] for x in xs])
            cells.append(cell)
        print("| %s | %s |" % (c, " | ".join(cells)))
    print()
    bad = [(r["c"], r["r"], x["node"]) for r in rs for x in nodes[(name, r["c"], r["r"])] if x["digest"] == "bad"]
    if bad:
        print("**Digest mismatch**: %s\n" % ", ".join("%s r%d %s" % b for b in bad))
    timeline(name, p, rs, smp)
    for r in rs:
        if r["outcome"] != "done":
            print("- %s round %d: %s after %.1f s; %d of %d pieces held by no leecher" % (
                r["c"], r["r"], r["outcome"], r["t1"] - r["t0"], r["nobody"], r["pieces"]))
        # The link-utilisation CSV of this round.
        path = os.path.join(run, "links-%s-%s-r%d.csv" % (name, r["c"], r["r"]))
        with open(path, "w") as out:
            out.write("t,node,up_mbit,down_mbit\n")
            for node, xs in sorted(smp.items()):
                for (ta, ua, da), (tb, ub, db) in zip(xs, xs[1:]):
                    if r["t0"] - 0.5 <= tb <= r["t1"] + 0.5 and tb > ta and ub >= ua and db >= da:
                        out.write("%.2f,%s,%.2f,%.2f\n" % (
                            tb - r["t0"], node, (ub - ua) * 8 / 1e6 / (tb - ta), (db - da) * 8 / 1e6 / (tb - ta)))
    print()
