"""OpenSSH public keys made with ssh-keygen, and the fingerprints `ssh-keygen -lf` printed."""
# ruff: noqa: E501 - the keys are single lines, as ssh-keygen writes them

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnecwh7bkk3QGByRquKIT4NexvEYhdnLFIWkogGtq1O alice@laptop",
    "SHA256:eQOYOX3ywAeZ0lkDIXNrn2z6rLRZuL9zxx1gVVeW11Q",
)

RSA_2048 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC322FmPMznLCOxhTNDQyMZbWVeOIYtCXo2Uekd8bNKqgmaDejh74uIvR9XcfYGf/WAbDplxXQgukhwHkL6Hr//nlppzba0FolX3BeLsxwEdGC2UJWLgnB6xaHOhb80kFYiiBYaK4YZYtGZJe6YQRByl4l7wAKojkEyqq6/WeGYxXjyeIux2xR42+3AIKqYQOvqGzpFT2oeSzLqtBAUdvcMRaFkA+edhXaxdo5Ic8AI4F92nKuk11R1Fvuh88+Cj+oum9jZkAAYqlQkGlLw37ndkDJ9cPr0au31Jv2lvqSrAQ5IIM0AA5r4KFNmSPuzywVl+gj5XzpsjprAoBqNeI5R rsa@host",
    "SHA256:5BmTFmYJoPX/l8qhEgAeZH6BmBoR0W2xduLHoztg7pE",
)

ECDSA_P256 = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAfZQu2QdLs2NMGRUp86upkis+S/9ZaKpuoka7YDhkA3uW/6kp0kWtRoHo7TZwLSG4X2kRSYlljKX81lJjL4BSo=",
    "SHA256:Ry55Ljv93vQCiHLFlV+pnexXdDJdkh9/8DSWG0TRJO8",
)

RSA_1024 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDf7EhXbqVpVBRHLJ1Aw/42+20WknWpryXMk0EcaHoyvTZxMPhy5e9BRNsivNzmRkLncj9xvH+kDY7RIn+TAOcYxsBFQoiU647YiLLj3JHJEdIdXPPd3UvWwPngeT+e0uiRUPvey4mZ1UcywOA2X1PRHHkcKXFypbEXwYP98bY63w== root@vm",
    "SHA256:f3pJ+AQaeOtiLl/9woaEf21aFhpu3kcoJyTvTOHw5LM",
)

ALL = (ED25519, RSA_2048, ECDSA_P256)
