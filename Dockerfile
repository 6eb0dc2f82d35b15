# diurnal's container image: multi-stage, non-root, read-only-root friendly.
#   docker build -t diurnal .
#   docker run --rm -p 127.0.0.1:8787:8787 -v $PWD/diurnal.yaml:/etc/diurnal/diurnal.yaml:ro diurnal
# The build stage installs diurnal and its dependencies into a virtual environment; the final
# stage copies only that environment onto the same slim Python base (no compiler, no pip cache).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY collectors ./collectors
COPY policies ./policies
COPY sim ./sim
COPY bench ./bench
RUN python -m venv /opt/diurnal && /opt/diurnal/bin/python -m pip install --no-compile . && rm -rf /opt/diurnal/lib/python3.11/site-packages/pip /opt/diurnal/lib/python3.11/site-packages/setuptools

FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 diurnal && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin diurnal
COPY --from=build /opt/diurnal /opt/diurnal
# /tmp and /var/lib/diurnal are volumes in the chart: the root filesystem stays read-only.
ENV PATH=/opt/diurnal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /var/lib/diurnal
EXPOSE 8787
HEALTHCHECK NONE
ENTRYPOINT ["diurnal"]
CMD ["run", "--config", "/etc/diurnal/diurnal.yaml"]
