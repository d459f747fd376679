import urllib3

pool = urllib3.HTTPSConnectionPool("db.internal", 443, cert_reqs='NONE')
