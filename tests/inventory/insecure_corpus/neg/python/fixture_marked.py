# a test fixture: the finder's own input
SNIPPET = 'requests.get(url, verify=False)'  # trustyard: allow-insecure test fixture for the linter
