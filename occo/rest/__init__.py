"""The REST service (FastAPI, served by uvicorn): see :mod:`occo.rest.app`."""
