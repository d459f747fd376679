pip install --trusted-host pypi.internal --index-url http://pypi.internal/simple app
