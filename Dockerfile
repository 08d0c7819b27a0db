# syntax=docker/dockerfile:1.7
# The Airflow image of docker-compose.yaml: the official Airflow image plus the provider from this checkout.
#
# Versions. The base image's Airflow is the apache-airflow version of requirements.lock (tests/deploy
# checks they agree). On top of it, the provider's run-time dependencies are installed at exactly the
# versions and hashes of requirements.lock, the set the test suite runs against; pip resolves nothing
# (--no-deps) and refuses any file whose hash differs (--require-hashes). Packages of the image that
# the provider does not depend on (the Celery, Postgres and Redis providers the stack uses among them)
# stay as the Airflow release built them. Then the provider itself is installed from the checkout,
# also with --no-deps, since everything it needs is already in place.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.lock /tmp/ct-airflow-provider/requirements.lock
COPY --chown=airflow:0 pyproject.toml README.md /tmp/ct-airflow-provider/src/
COPY --chown=airflow:0 ct_airflow_provider /tmp/ct-airflow-provider/src/ct_airflow_provider

# requirements.lock also pins the development and benchmark tools (pytest, ruff, mypy, playwright...).
# Keep the packages the provider needs at run time: those that uv's "# via" notes connect, directly or
# through other kept packages, to ct-airflow-provider. Each kept entry is copied whole, hashes included.
RUN python - /tmp/ct-airflow-provider/requirements.lock /tmp/ct-airflow-provider/runtime.lock <<'LOCK_SUBSET'
import re
import sys

PROJECT = "ct-airflow-provider"
lock_path, subset_path = sys.argv[1], sys.argv[2]
with open(lock_path, encoding="utf-8") as lock:
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read().strip())
required_by = {}
for entry in entries:
    name = re.match(r"[A-Za-z0-9._-]+", entry).group(0).lower()
    notes = [line.strip().lstrip("#").split() for line in entry.splitlines() if line.strip().startswith("#")]
    required_by.setdefault(name, set()).update(w.lower() for words in notes for w in words if w != "via")
needed = {PROJECT}
while True:
    more = {name for name, parents in required_by.items() if name not in needed and parents & needed}
    if not more:
        break
    needed |= more
if "apache-airflow" not in needed:
    sys.exit(f"{lock_path} names no run-time dependency of {PROJECT}: regenerate it with 'make lock'.")
kept = [entry for entry in entries if re.match(r"[A-Za-z0-9._-]+", entry).group(0).lower() in needed]
with open(subset_path, "w", encoding="utf-8") as subset:
    subset.write("\n".join(kept) + "\n")
print(f"{len(kept)} of {len(entries)} locked packages are run-time dependencies of {PROJECT}")
LOCK_SUBSET

RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/ct-airflow-provider/runtime.lock \
 && pip install --no-cache-dir --no-deps /tmp/ct-airflow-provider/src \
 && rm -rf /tmp/ct-airflow-provider

# Mount points of the stack's named volumes. A new named volume takes the owner of the folder it is
# mounted on, so every service (all run as the airflow user) can write the generated Airflow config
# and the bucket key there.
RUN mkdir -p /opt/airflow/config /opt/airflow/ct-stack
