"""What the image does around a boot, before supervisord: merging the user's first-boot
settings (``config_merge``) and reporting the filesystem checks (``fsck_report``)."""
