# storyworker: `storyworker run` (the supervisor, its workers and the /health server)
# as the container's command, PID 1. Every setting comes from the environment at run
# time (DATABASE_URL, GOOGLE_GENERATIVE_AI_API_KEY, ...: see README.md); nothing secret
# is in the build context (.dockerignore) or in any layer.
#
#   docker build -t storyworker .
#   docker run --rm -e DATABASE_URL=... -e GOOGLE_GENERATIVE_AI_API_KEY=... storyworker
#
# `docker stop` waits 10 s before SIGKILL, so SHUTDOWN_GRACE_SECONDS defaults to 8 here
# (30 outside a container). To give running jobs longer, raise both together, the stop
# timeout a few seconds above the grace: `docker run -e SHUTDOWN_GRACE_SECONDS=25` with
# `docker stop -t 30`, or the platform's setting (fly.toml, railway.json, .do/app.yaml).

FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/storyworker
# The dependencies first, read from setup.cfg: a change to the code alone then reuses
# this layer instead of downloading them again.
COPY setup.cfg /src/setup.cfg
RUN python3 -c "import configparser; c = configparser.ConfigParser(); \
c.read('/src/setup.cfg'); print(c['options']['install_requires'])" > /src/requirements.txt \
 && /opt/storyworker/bin/pip install -r /src/requirements.txt
COPY . /src
# pip and setuptools only install: the image runs without them.
RUN /opt/storyworker/bin/pip install --no-deps /src \
 && /opt/storyworker/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && /opt/storyworker/bin/storyworker --help > /dev/null


FROM python:3.12-slim

# A user without a login, a home or a password; numeric in USER below so that
# platforms that insist on a non-root uid (runAsNonRoot) can tell.
RUN groupadd --gid 10001 storyworker \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
      --home-dir /nonexistent --shell /usr/sbin/nologin storyworker \
 && mkdir /srv/storyworker
COPY --from=build /opt/storyworker /opt/storyworker

ENV PATH=/opt/storyworker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PORT=3951 \
    HEALTH_HOST=0.0.0.0 \
    SHUTDOWN_GRACE_SECONDS=8

# An empty working directory owned by root: `storyworker` reads a .env file from its
# working directory, and there is none here (mount one to use one).
WORKDIR /srv/storyworker
USER 10001:10001

EXPOSE 3951
# TERM: stop claiming, let in-flight jobs finish within SHUTDOWN_GRACE_SECONDS, release
# the rest to pending with their checkpoints, exit 0.
STOPSIGNAL SIGTERM
# `storyworker health` asks /health on $PORT: exit 0 only when the supervisor and every
# worker are fresh. (Kept in the image by `docker build`; podman needs --format docker.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["storyworker", "health", "--timeout", "3"]

CMD ["storyworker", "run"]
