# One image for every vidbrief service: the Ray head, the Ray GPU workers, the bridge and the
# webhook worker (compose.yaml runs them all from it; only Redis uses its own image).
#
#   docker build -t vidbrief:local .                  # GPU workers: torch built for CUDA 12
#   docker build -t vidbrief:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   # no GPU anywhere
#
# Why CUDA 12 and not PyPI's torch: torch 2.13.0 on PyPI is built for CUDA 13 (its wheel needs
# nvidia-*-cu13), while faster-whisper's engine CTranslate2 4.x needs CUDA 12's libcublas.so.12
# (it fails to load without it). The CUDA 12 build from PyTorch's own index brings nvidia-cublas-cu12 and
# nvidia-cudnn-cu12 as wheels, so both torch and CTranslate2 run on the GPU, with no CUDA base
# image: the host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
# `--build-arg TORCH_INDEX_URL=https://pypi.org/simple` gives PyPI's CUDA 13 build instead;
# speech then moves to transformers' Whisper on torch (pipeline/speech.py falls back by itself).

FROM python:3.11-slim-bookworm

# The torch wheel, installed before the project so that `pip install .` keeps it.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cu126"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/vidbrief \
    PATH=/opt/vidbrief/bin:$PATH

# WeasyPrint needs Pango and HarfBuzz (it fails to import without them), and the report a
# font. Nothing else: PyAV's wheel bundles FFmpeg, the download step never uses an ffmpeg
# binary, Ray and the rest are wheels. No compilers, no curl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"

# The dependencies in their own layer (changes to pyproject.toml only): install the project
# from empty package stubs, then drop the stub, so code changes do not reinstall ray & co.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN for pkg in ingest raybridge pipeline vidbrief webhooks; do mkdir "$pkg" && touch "$pkg/__init__.py"; done \
 && pip install . "$TORCH_SPEC" \
 && pip uninstall -y vidbrief \
 && rm -rf /src/*

# The project itself (.dockerignore lets in only these folders and the two files above).
COPY ingest ingest/
COPY raybridge raybridge/
COPY pipeline pipeline/
COPY vidbrief vidbrief/
COPY webhooks webhooks/
COPY pyproject.toml README.md ./
RUN pip install --no-deps . \
 && rm -rf /src/* \
 && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" \
 && vidbrief --help >/dev/null

# CTranslate2 (faster-whisper) dlopens libcublas.so.12 and cuDNN 9 by name: point it at the
# nvidia-* wheels that the CUDA 12 torch brought (the folders do not exist in a CPU build).
ENV LD_LIBRARY_PATH=/opt/vidbrief/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/vidbrief/lib/python3.11/site-packages/nvidia/cudnn/lib

# A fixed non-root user; the data folders are created here, owned by it, so that named volumes
# mounted on them start with this owner (Docker copies the folder's owner into a new volume).
RUN groupadd --system --gid 10001 vidbrief \
 && useradd --system --uid 10001 --gid vidbrief --home-dir /home/vidbrief --create-home \
        --shell /usr/sbin/nologin vidbrief \
 && mkdir -p /var/lib/vidbrief/work /var/lib/vidbrief/reports /var/lib/vidbrief/state \
        /var/lib/vidbrief/cache /var/lib/vidbrief/dataset \
 && chown -R vidbrief:vidbrief /var/lib/vidbrief

# Defaults for every container of this image (compose.yaml sets the same explicitly). Ray
# sends no usage statistics from a production cluster.
ENV VIDBRIEF_WORK_DIR=/var/lib/vidbrief/work \
    VIDBRIEF_REPORTS_URL=/var/lib/vidbrief/reports \
    VIDBRIEF_STATE_DIR=/var/lib/vidbrief/state \
    HF_HOME=/var/lib/vidbrief/cache/huggingface \
    VIDBRIEF_MODEL_CACHE_DIR=/var/lib/vidbrief/cache/models \
    RAY_USAGE_STATS_ENABLED=0

USER 10001:10001
WORKDIR /home/vidbrief

# `docker run IMAGE bridge`, `... webhook-worker`, `... submit URL`; the Ray nodes override the
# entrypoint with `ray` (compose.yaml).
ENTRYPOINT ["vidbrief"]
CMD ["--help"]
