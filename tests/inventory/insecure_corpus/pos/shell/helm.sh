helm repo add internal https://charts.internal --insecure-skip-tls-verify
