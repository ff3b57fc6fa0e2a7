# syntax=docker/dockerfile:1
# The finetune-operator image: `docker build -t finetune-operator .` from the repository root.
# Stage 1 builds a virtual environment with the pinned dependencies; stage 2 copies only that
# environment onto a fresh slim base, so no pip cache, compiler or build backend ships.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
# Only finetune_api and finetune_operator, with the operator's dependencies (no [trainer] extra): the
# trainer package is not in this image, so neither is its `ftj` console script.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && rm /opt/venv/bin/ftj \
    && /opt/venv/bin/python -c "import finetune_operator.__main__" \
    && ! /opt/venv/bin/python -c "import finetune_trainer" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="finetune-operator" \
      org.opencontainers.image.description="Runs LLM fine-tuning as FineTuneJob custom resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/finetune-operator/finetune-operator"
# MALLOC_ARENA_MAX: glibc gives each of the operator's ~45 threads its own malloc arena, each keeping
# freed memory; two arenas took peak RSS at 500 FineTuneJobs from 227 to 187 MiB (docs/benchmarks.md).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
COPY --from=build /opt/venv /opt/venv
# 65532 is the conventional "nonroot" id; the chart's securityContext runs as the same numeric id.
# A passwd entry too: libraries that ask for the user's name (getpass.getuser()) find one.
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "finetune_operator"]
CMD ["--all-namespaces"]
