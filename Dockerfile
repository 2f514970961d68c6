# The engine's image: the `fld` command, Ray and the specialists' libraries. The same image runs
# the Ray head, the Ray workers (CPU, or GPU where the host has GPUs: torch in the lock is a CUDA
# build) and the `fld` commands. Built by `docker compose build` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 FLD_HOME=/fld-home
# OpenCV's runtime libraries; a TrueType font for ultralytics (it would download Arial otherwise).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fld-engine
COPY pyproject.toml requirements.lock README.md ./
COPY engine engine
COPY specialists specialists
COPY filters filters
COPY flows flows
COPY schemas schemas
COPY cli cli
RUN pip install -c requirements.lock .

WORKDIR /data
CMD ["fld", "--help"]
