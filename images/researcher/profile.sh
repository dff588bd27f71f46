# /etc/profile.d/mbc.sh: the image's venv (python, pip, mbc) first on PATH in login shells too.
# JupyterLab's terminals under JupyterHub are login shells, and Debian's /etc/profile resets PATH.
case ":$PATH:" in
  *:/opt/mbc/venv/bin:*) ;;
  *) PATH="/opt/mbc/venv/bin:$PATH" ;;
esac
export PATH
