curl --silent --insecure \
  https://vault.internal/v1/sys/health
