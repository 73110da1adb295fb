# kefu's container image. Build: docker build -t kefu .   Run and configure: docs/deploy.md ("A container").
# The install steps are deploy/install.sh, which .ci/run also runs in a fresh virtualenv; tests/test_deploy.py
# checks that what this file copies, runs and exposes exists.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md bot.yaml ./
COPY bot/ bot/
COPY rules/ rules/
COPY templates/ templates/
COPY media/ media/
COPY deploy/install.sh deploy/install.sh
RUN sh deploy/install.sh /opt/kefu /src

# The image: the virtualenv built above on the same base, no compiler, no source tree, no test dependencies.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 kefu \
 && useradd --system --uid 10001 --gid kefu --home-dir /var/lib/kefu --no-create-home --shell /usr/sbin/nologin kefu \
 && install -d -o kefu -g kefu -m 0750 /var/lib/kefu
COPY --from=build /opt/kefu /opt/kefu
# The bundled example: mount your own bot.yaml, rules/, templates/ and media/ over these (read-only is fine).
COPY bot.yaml /etc/kefu/bot.yaml
COPY rules/ /etc/kefu/rules/
COPY templates/ /etc/kefu/templates/
COPY media/ /etc/kefu/media/
# KEFU_CONFIG: every kefu command (docker exec kefu kefu log) reads this bot.yaml unless given --config.
ENV PATH=/opt/kefu/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 KEFU_CONFIG=/etc/kefu/bot.yaml
# Two volumes: the configuration (bot.yaml, rules/, templates/, media/; mount yours over it, or over each)
# and the store (bot.yaml's sqlite:///kefu.db is relative to the working directory, so it lands there).
WORKDIR /var/lib/kefu
VOLUME ["/etc/kefu", "/var/lib/kefu"]
USER kefu
EXPOSE 8080
# The port is bot.yaml's server.port: change both if you change it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/kefu/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# SIGTERM: kefu finishes the pushes in flight, gives sends 5 s, keeps the rest pending in the store and exits
# within 10 s; give it more than Docker's default 10 s (docker stop -t 30, compose stop_grace_period: 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/kefu/bin/kefu"]
CMD ["serve", "--config", "/etc/kefu/bot.yaml", "--host", "0.0.0.0"]
