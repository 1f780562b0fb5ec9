"""The model service and the retraining system of driftwatch's compose setup.

  sim.py receiver   an HTTP retraining system: POST /retrain logs the request
                    and answers {"job_id", "model_version"}; TRAINING_SECONDS
                    later that version is "deployed" (GET /version says so)
  sim.py loadgen    the model service: predictions of model `churn` published
                    to Kafka in real time, labels 15-45 s later; after
                    DRIFT_AFTER_SECONDS the inputs drift and the deployed
                    version loses accuracy, until the receiver deploys the next
                    version, which was trained on the drifted data

Only the standard library and confluent-kafka.
"""

import json
import math
import os
import random
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "churn"


def log(*parts):
    print(datetime.now(timezone.utc).strftime("%H:%M:%S"), *parts, flush=True)


# ---------------------------------------------------------------- receiver

class Deployments:
    def __init__(self, training_seconds):
        self.lock = threading.Lock()
        self.version = 1
        self.runs = {}  # idempotency key -> answer
        self.training_seconds = training_seconds

    def request(self, key):
        with self.lock:
            if key and key in self.runs:
                return self.runs[key], False
            run = len(self.runs) + 1
            answer = {"job_id": f"compose-run-{run}", "model_version": f"v{self.version + 1}"}
            self.runs[key or answer["job_id"]] = answer
            target = self.version + 1
        threading.Timer(self.training_seconds, self.deploy, [target, answer["job_id"]]).start()
        return answer, True

    def deploy(self, version, job):
        with self.lock:
            if version > self.version:
                self.version = version
                log(f"run {job} done: churn v{version} deployed")

    def current(self):
        with self.lock:
            return f"v{self.version}"


def receiver():
    deployments = Deployments(float(os.environ.get("TRAINING_SECONDS", "120")))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/version":
                self.answer(200, {"model_id": MODEL, "model_version": deployments.current()})
            else:
                self.answer(404, {"error": "no such route"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            if self.path != "/retrain":
                self.answer(404, {"error": "no such route"})
                return
            key = self.headers.get("Idempotency-Key", "")
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                payload = {}
            answer, new = deployments.request(key)
            alerts = payload.get("alerts", [])
            rules = ", ".join(sorted({a.get("rule", "?") for a in alerts}))
            drifted = []
            for a in alerts:
                for f in (a.get("evidence") or {}).get("drifted_features", []):
                    drifted.append(f"{f.get('feature')} (PSI {f.get('psi', float('nan')):.2f})")
            log(("retraining requested" if new else "retraining request repeated"),
                f"key={key or '-'} status={payload.get('status')} rules=[{rules}]",
                f"drifted=[{', '.join(drifted[:5])}]", f"-> {answer['job_id']} delivers {answer['model_version']}",
                f"in {deployments.training_seconds:.0f} s" if new else "")
            self.answer(200, answer)

    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8088"))), Handler)
    log("retraining receiver listening on", server.server_address)
    server.serve_forever()


# ----------------------------------------------------------------- loadgen

def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def features(drifted, rng):
    """One customer. After the drift the customers are younger, spend more,
    and choose the basic plan less often."""
    age = rng.gauss(33 if drifted else 45, 9)
    spend = rng.lognormvariate(4.2 if drifted else 3.8, 0.4)
    tenure = max(0, int(rng.expovariate(1 / (10 if drifted else 24))))
    plans = ["basic", "pro", "enterprise"]
    weights = [0.2, 0.5, 0.3] if drifted else [0.6, 0.3, 0.1]
    plan = rng.choices(plans, weights)[0]
    return {"age": round(age, 1), "monthly_spend": round(spend, 2), "tenure_months": tenure,
            "plan": plan, "region": rng.choice(["eu", "us", "apac"])}


def churn_logit(f, drifted):
    """How customers really behave: after the drift, young high spenders on
    short tenures churn for a new reason the old model never saw."""
    z = -0.12 * (f["tenure_months"] - 20) + (2.0 if f["plan"] == "basic" else -1.0)
    if drifted:
        z += 0.08 * (f["monthly_spend"] - 70) - 0.15 * (f["age"] - 33)
    return z


def loadgen():
    from confluent_kafka import Producer

    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": os.environ.get("BROKERS", "kafka:9092"), "linger.ms": 50})
    receiver_url = os.environ.get("RECEIVER", "http://receiver:8088")
    rate = float(os.environ.get("EVENTS_PER_SECOND", "40"))
    drift_after = float(os.environ.get("DRIFT_AFTER_SECONDS", "420"))
    started = time.time()
    version, first_version = "v1", "v1"
    checked = 0.0
    labels = []  # (due, event)
    sent = 0
    log(f"publishing {rate:.0f} predictions/s of {MODEL}; drift after {drift_after:.0f} s")
    while True:
        now = time.time()
        if now - checked > 5:
            checked = now
            try:
                with urllib.request.urlopen(f"{receiver_url}/version", timeout=2) as r:
                    served = json.load(r)["model_version"]
                if served != version:
                    log(f"the model service now serves {MODEL} {served}")
                    version = served
            except OSError as e:
                log("receiver not reachable:", e)
        drifted = now - started > drift_after
        f = features(drifted, rng)
        truth = rng.random() < sigmoid(churn_logit(f, drifted))
        # a version trained after the drift knows the new behaviour
        knows = drifted and version != first_version
        score = sigmoid(churn_logit(f, knows) + rng.gauss(0, 0.3))
        event_id = str(uuid.uuid4())
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        prediction = {"event_id": event_id, "model_id": MODEL, "model_version": version, "timestamp": stamp,
                      "features": {k: v for k, v in f.items() if k != "region"},
                      "prediction": {"score": round(score, 4), "class": "1" if score >= 0.5 else "0"},
                      "segments": {"region": f["region"]}}
        producer.produce("predictions", key=MODEL, value=json.dumps(prediction))
        if rng.random() < 0.85:
            labels.append((now + rng.uniform(15, 45), {"event_id": event_id, "model_id": MODEL,
                                                      "label": "1" if truth else "0"}))
        while labels and labels[0][0] <= now:
            _, label = labels.pop(0)
            label["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            producer.produce("labels", key=MODEL, value=json.dumps(label))
        labels.sort(key=lambda x: x[0])
        producer.poll(0)
        sent += 1
        if sent % int(rate * 60) == 0:
            log(f"{sent} predictions sent ({'drifted' if drifted else 'as in training'}, serving {version})")
        time.sleep(max(0.0, started + sent / rate - time.time()))


if __name__ == "__main__":
    {"receiver": receiver, "loadgen": loadgen}[sys.argv[1] if len(sys.argv) > 1 else "loadgen"]()
