pip install --cert /etc/trustyard/ca.crt --index-url https://pypi.internal/simple app
npm config set strict-ssl true
