# The subledger node image: `subledger serve` (bus worker and periodic work) by default.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY ledger ledger
COPY projections projections
COPY commands commands
COPY gateways gateways
COPY bench bench
RUN pip install --no-cache-dir .
# `serve` finishes the batch in hand on SIGTERM, then exits.
STOPSIGNAL SIGTERM
CMD ["subledger", "serve"]
