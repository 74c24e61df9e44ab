# The logloop code-location image. It runs the gRPC code server for Dagster's Helm chart, and it
# is the image of run and step pods (K8sRunLauncher and k8s_job_executor use it).
# torch is a CUDA build, so the train step's pod uses the node's GPUs; the NVIDIA driver
# comes from the node (the NVIDIA device plugin), the CUDA libraries from the torch wheel.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home LOGLOOP_HOME=/opt/logloop/data LOGLOOP_EXECUTOR=k8s

WORKDIR /opt/logloop/app
# the CUDA build of the pinned torch first; the project's own `torch==2.13.0` is then satisfied
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY orchestration ./orchestration
COPY ops ./ops
COPY resources ./resources
COPY config ./config
COPY workspace.yaml ./
# the code location is imported from here by every run and step pod: compiled once, in the image
RUN pip install . && python -m compileall -q orchestration ops resources && mkdir -p ${DAGSTER_HOME} ${LOGLOOP_HOME}
COPY deploy/dagster.k8s.yaml ${DAGSTER_HOME}/dagster.yaml

EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "orchestration.definitions"]
