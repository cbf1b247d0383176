# The image of every reaseq process (provision, stream workers, Triton with the ranker); compose.yaml builds it.
# nvidia-pytriton brings the tritonserver binary, so Triton runs from this image too.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The state directory exists in the image, owned by the runtime user, so that volumes mounted on it
# (compose.yaml's per-replica anonymous volume) start writable by that user.
RUN useradd --system --uid 10001 --create-home --home-dir /home/reaseq reaseq \
    && mkdir -p /var/lib/reaseq/state \
    && chown -R reaseq /var/lib/reaseq

# A bind mount (BuildKit) keeps the source tree out of the image layers; the build writes there and is discarded.
RUN --mount=type=bind,target=/src,rw pip install /src

USER reaseq
WORKDIR /var/lib/reaseq
ENV REASEQ_STATE_DIR=/var/lib/reaseq/state

ENTRYPOINT ["reaseq"]
CMD ["--help"]
