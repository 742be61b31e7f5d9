"""The one entrance in front of every model (route prefix ``/``)."""
