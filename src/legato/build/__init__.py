"""From source to image: analysis of a repository, git clones and Docker builds."""
