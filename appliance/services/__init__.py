"""Domain logic: plain functions taking plain values and the acting principal.

A service owns its transaction (`with database.atomic()`), raises the errors of
`appliance.errors`, and is called alike by the JSON API and the dashboard.
"""
