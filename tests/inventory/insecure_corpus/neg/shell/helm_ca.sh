helm repo add internal https://charts.internal --ca-file /etc/trustyard/ca.crt
