# privit in a container: one role per container (docs/deploy.md shows the `docker run` lines).
#   docker build -t privit .
#   docker run --rm privit --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    XDG_CACHE_HOME=/tmp/cache \
    HOME=/tmp

# the CPU wheel of torch first, so that `pip install .` does not pull the CUDA one
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY setup.py pyproject.toml README.md LICENSE ./
COPY launch launch
COPY parties parties
COPY protocols protocols
COPY models models
RUN pip install . && rm -rf /src

WORKDIR /work
ENTRYPOINT ["privit"]
CMD ["--help"]
