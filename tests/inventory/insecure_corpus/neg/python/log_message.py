import logging

logging.warning("someone set verify=False on the session; refusing")
error = "check_hostname = False is not allowed"
