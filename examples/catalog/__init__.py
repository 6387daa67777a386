"""The products catalog: asyncdal's reference service, demo, test bed and benchmark target."""
